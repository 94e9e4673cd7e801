"""The window cutter: prediction records in, windows out (no Ray, no storage).

Records are de-duplicated by key (``request_id:row``) against the open window and the
keys of the records cut lately: every one cut in the last ``key_horizon_s`` seconds, and
at least the last few windows. A restart re-reads the log files written since the last
checkpoint less a slack (:data:`ray_mlops.monitor.core.CATCH_UP_SLACK_S`, well inside
the horizon), so a record re-read after a restart is counted once however fast traffic is;
and a window is cut when ``window_size`` records are open, or ``min_window`` of them
have waited ``window_max_s`` seconds.

>>> import pandas as pd
>>> cutter = WindowCutter(["x", "request_id", "row"], window_size=2, min_window=1, window_max_s=60)
>>> cutter.add([pd.DataFrame({"x": [1, 2, 2], "request_id": ["a", "a", "a"], "row": [0, 1, 1]})])
2
>>> cutter.due(), cutter.cut()["x"].tolist(), cutter.state.records
(True, [1, 2], 2)
>>> cutter.add([pd.DataFrame({"x": [2], "request_id": ["a"], "row": [1]})])  # seen: not counted twice
0
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from ray_mlops.contracts import record_keys

RECENT_KEY_WINDOWS = 5
KEY_HORIZON_S = 10.0
MAX_RECENT_KEYS = 500_000


@dataclass
class CutterState:
    """What the cutter keeps across a restart (the open window is saved beside it)."""

    records: int = 0
    dropped_records: int = 0
    window_opened: float | None = None
    recent_keys: dict[str, float] = field(default_factory=dict)  # key -> when its record was cut (epoch seconds)

    def __post_init__(self) -> None:
        if isinstance(self.recent_keys, list):  # a checkpoint from before record times were kept
            self.recent_keys = dict.fromkeys(self.recent_keys, 0.0)


class WindowCutter:
    """Prediction records → windows of ``window_size`` (see the module docstring)."""

    def __init__(self, columns: list[str], *, window_size: int, min_window: int, window_max_s: float,
                 state: CutterState | None = None, clock: Callable[[], float] = time.time,
                 key_horizon_s: float = KEY_HORIZON_S):
        self.columns, self.window_size, self.min_window, self.window_max_s = columns, window_size, min_window, window_max_s
        self.key_horizon_s = key_horizon_s
        self.state, self.clock = state or CutterState(), clock
        self.window = pd.DataFrame(columns=columns)
        self._recent = set(self.state.recent_keys)

    @property
    def rows(self) -> int:
        """Records in the open window."""
        return len(self.window)

    def restore(self, window: pd.DataFrame | None) -> None:
        """Put back the open window saved at the last checkpoint."""
        if window is not None and len(window):
            self.window = window

    def add(self, frames: list[pd.DataFrame]) -> int:
        """Append frames of records; returns how many were new (not seen before)."""
        if not frames:
            return 0
        frame = pd.concat([self.window, *frames] if len(self.window) else frames, ignore_index=True)
        keys = record_keys(frame)
        fresh = ~keys.duplicated() & ~keys.isin(self._recent)
        added = int(fresh.sum()) - len(self.window)
        self.window = frame[fresh.to_numpy()].reset_index(drop=True)
        self.state.records += added
        if self.state.window_opened is None and len(self.window):
            self.state.window_opened = self.clock()
        return added

    def cap(self, limit: int) -> int:
        """Keep the newest ``limit`` records (nothing can be tested yet); returns how many were dropped."""
        dropped = max(len(self.window) - limit, 0)
        if dropped:
            self.window = self.window.iloc[dropped:].reset_index(drop=True)
            self.state.dropped_records += dropped
        return dropped

    def due(self) -> bool:
        """Is a window ready to cut?"""
        if not len(self.window):
            return False
        if len(self.window) >= self.window_size:
            return True
        opened = self.state.window_opened or self.clock()
        return len(self.window) >= self.min_window and self.clock() - opened >= self.window_max_s

    def cut(self) -> pd.DataFrame:
        """The oldest ``window_size`` (or fewer) records, removed from the open window."""
        size = min(len(self.window), self.window_size)
        window, self.window = self.window.iloc[:size], self.window.iloc[size:].reset_index(drop=True)
        self.state.window_opened = self.clock() if len(self.window) else None
        self._remember(window)
        return window

    def _remember(self, window: pd.DataFrame) -> None:
        """Keep the keys of records cut within the horizon, and of at least the last few windows."""
        recent, now = self.state.recent_keys, self.clock()
        recent.update(dict.fromkeys(record_keys(window).tolist(), now))
        horizon = now - self.key_horizon_s
        floor = len(recent) - RECENT_KEY_WINDOWS * self.window_size
        ceiling = len(recent) - MAX_RECENT_KEYS
        self.state.recent_keys = {key: stamp for i, (key, stamp) in enumerate(recent.items())
                                  if i >= ceiling and (stamp >= horizon or i >= floor)}
        self._recent = set(self.state.recent_keys)


class Inbox:
    """The cheap receive path: frames (or why they were refused) queued under a lock, taken by the step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frames: list[pd.DataFrame] = []
        self._refused: list[str] = []

    def put(self, frame: pd.DataFrame | None, problem: str | None = None) -> None:
        """Queue a frame, or the reason one was refused."""
        with self._lock:
            if problem is not None:
                self._refused.append(problem)
            else:
                self._frames.append(frame)

    def take(self) -> tuple[list[pd.DataFrame], list[str]]:
        """Everything queued since the last take: (frames, refusals)."""
        with self._lock:
            frames, refused, self._frames, self._refused = self._frames, self._refused, [], []
        return frames, refused

    def rows(self) -> int:
        """Rows queued, not merged yet."""
        with self._lock:
            return sum(len(f) for f in self._frames)


__all__ = ["WindowCutter", "CutterState", "Inbox"]
