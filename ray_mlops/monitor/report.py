"""An HTML report of the monitor's windows: p-values over time and per feature, inline SVG.

No plotting dependency: two hand-made SVG charts (the family p-value of each detector per
window, on a log scale, with alarms and model switches marked; a heat map of the
features' p-values per window) and tables of the timeline and summary figures.

>>> html = render_report([], [], {"title": "empty"})
>>> html.startswith("<!doctype html>")
True
"""

from __future__ import annotations

import html as _html
import math
from typing import Any

from ray_mlops.monitor.state import MonitorStatus

DETECTOR_COLORS = {"inputs": "#1f77b4", "predictions": "#ff7f0e", "accuracy": "#2ca02c"}
FLOOR = 1e-12
HEAT_FEATURES = 24


def _esc(value: Any) -> str:
    return _html.escape(str(value))


def _y(p: float | None, top: float, height: float) -> float:
    p = max(FLOOR, min(1.0, 1.0 if p is None else p))
    return top + height * (-math.log10(p)) / (-math.log10(FLOOR))


def pvalue_chart(verdicts: list[dict], alpha: float, width: int = 900, height: int = 260) -> str:
    """Per-detector p-value per window (log scale), alpha line, alarms and version changes."""
    left, top, plot_w, plot_h = 60, 15, width - 80, height - 50
    n = max(len(verdicts), 1)
    x = lambda i: left + plot_w * (i + 0.5) / n  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>']
    for exp in (0, 2, 4, 6, 8, 10, 12):
        y = _y(10.0 ** -exp, top, plot_h)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">1e-{exp}</text>')
    ya = _y(alpha, top, plot_h)
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{ya:.1f}" y2="{ya:.1f}" stroke="#d62728" '
                 f'stroke-dasharray="4 3"/><text x="{left + plot_w - 4}" y="{ya - 4:.1f}" text-anchor="end" '
                 f'fill="#d62728">alpha={alpha}</text>')
    previous = None
    for i, v in enumerate(verdicts):
        if previous is not None and v["reference_version"] != previous:
            parts.append(f'<line x1="{x(i) - 0.5 * plot_w / n:.1f}" x2="{x(i) - 0.5 * plot_w / n:.1f}" y1="{top}" '
                         f'y2="{top + plot_h}" stroke="#9467bd" stroke-width="2"/><text x="{x(i):.1f}" y="{top + 12}" '
                         f'fill="#9467bd">{_esc(v["reference_version"])}</text>')
        previous = v["reference_version"]
        if v.get("alarm"):
            parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h - 4}" text-anchor="middle" fill="#d62728">&#9650;</text>')
    for name, color in DETECTOR_COLORS.items():
        points = [(x(i), _y(v["detectors"].get(name), top, plot_h)) for i, v in enumerate(verdicts)
                  if v["detectors"].get(name) is not None]
        if points:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
            parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{color}"/>' for px, py in points]
    for k, (name, color) in enumerate(DETECTOR_COLORS.items()):
        parts.append(f'<text x="{left + 10 + 110 * k}" y="{height - 8}" fill="{color}">&#9632; {name}</text>')
    parts.append(f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end">window &#8594; '
                 f'(&#9650; alarm, purple: reference version switch)</text></svg>')
    return "".join(parts)


VERSION_COLORS = ("#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def accuracy_chart(points: list[dict], width: int = 900, height: int = 260) -> str:
    """Live accuracy over time: one dot per bucket of answers (``ray_mlops.live_accuracy.series``),
    its Wilson 95% interval as a bar, coloured by the answering version."""
    left, top, plot_w, plot_h = 60, 15, width - 80, height - 50
    span = max((p["t"] for p in points), default=1.0) or 1.0
    lo = min([0.5] + [p["low"] for p in points if p["low"] is not None])
    x = lambda t: left + plot_w * t / span  # noqa: E731
    y = lambda a: top + plot_h * (1.0 - (a - lo) / (1.0 - lo))  # noqa: E731
    colors = {v: VERSION_COLORS[i % len(VERSION_COLORS)] for i, v in enumerate(dict.fromkeys(p["version"] for p in points))}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>']
    for tick in [t / 10 for t in range(int(math.ceil(lo * 10)), 11)]:
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.1f}</text>')
    for p in points:
        color, px = colors[p["version"]], x(p["t"])
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y(p["low"]):.1f}" y2="{y(p["high"]):.1f}" '
                     f'stroke="{color}" stroke-opacity="0.4"/><circle cx="{px:.1f}" cy="{y(p["accuracy"]):.1f}" r="3" '
                     f'fill="{color}"><title>{_esc(p["version"])} t={p["t"]}s: {p["accuracy"]:.3f} on {p["rows"]} '
                     f'rows</title></circle>')
    for k, (version, color) in enumerate(colors.items()):
        parts.append(f'<text x="{left + 10 + 80 * k}" y="{height - 8}" fill="{color}">&#9632; {_esc(version)}</text>')
    parts.append(f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end">seconds of traffic &#8594; '
                 f'(bars: Wilson 95% interval)</text></svg>')
    return "".join(parts)


def heatmap(verdicts: list[dict], features: int = HEAT_FEATURES, cell: int = 14) -> str:
    """-log10 p of the features that moved most, per window."""
    mins: dict[str, float] = {}
    for v in verdicts:
        for name, f in v.get("features", {}).items():
            mins[name] = min(mins.get(name, 1.0), f["p_value"])
    names = sorted(mins, key=mins.get)[:features]
    left, top = 230, 10
    width, height = left + cell * max(len(verdicts), 1) + 20, top + cell * len(names) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="10">']
    for r, name in enumerate(names):
        parts.append(f'<text x="{left - 4}" y="{top + cell * r + 10}" text-anchor="end">{_esc(name)}</text>')
        for c, v in enumerate(verdicts):
            f = v.get("features", {}).get(name)
            if f is None:
                continue
            level = min(1.0, -math.log10(max(f["p_value"], FLOOR)) / 10.0)
            red = int(255 - 40 * level)
            rest = int(255 * (1 - level))
            stroke = ' stroke="#000"' if f.get("drift") else ""
            parts.append(f'<rect x="{left + cell * c}" y="{top + cell * r}" width="{cell - 1}" height="{cell - 1}" '
                         f'fill="rgb({red},{rest},{rest})"{stroke}><title>{_esc(name)} window {v["index"]}: '
                         f'p={f["p_value"]:.3g}</title></rect>')
    parts.append(f'<text x="{left}" y="{height - 8}">window &#8594; (darker red: smaller p-value; outlined: '
                 f'flagged after correction)</text></svg>')
    return "".join(parts)


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if (value != 0 and abs(value) < 1e-3) else f"{value:.4f}".rstrip("0").rstrip(".")
    if value is None:
        return ""
    return str(value)


def status_section(status: MonitorStatus | None) -> str:
    """The monitor's :class:`~ray_mlops.monitor.state.MonitorStatus` (the one ``ray-mlops status`` prints)."""
    if status is None:
        return ""
    facts = [{"figure": "windows tested", "value": status.windows}, {"figure": "records", "value": status.records},
             {"figure": "alarms", "value": status.alarms}, {"figure": "restarts", "value": status.restarts},
             {"figure": "reference version", "value": (status.reference or {}).get("version")},
             {"figure": "automatic rollbacks", "value": status.rollback_count}]
    retrains = [{"retraining": r.id, "status": r.status, "version": r.version, "trigger window": r.trigger_window,
                 "seconds": r.seconds, "gate": (r.gate.reason if r.gate is not None else None) or r.error}
                for r in status.retrain_history]
    columns = ["retraining", "status", "version", "trigger window", "seconds", "gate"]
    return f"<h2>Monitor</h2>{_table(facts, ['figure', 'value'])}{_table(retrains, columns)}"


def live_section(live: list[dict] | None) -> str:
    """The live-accuracy chart, when the run measured one."""
    if not live:
        return ""
    return (f"<h2>Live accuracy over time</h2><p>Share of answered requests whose prediction matched the label "
            f"sent to /feedback, per bucket of answers, by the version that answered.</p>{accuracy_chart(live)}")


def render_report(verdicts: list[dict], timeline: list[dict], summary: dict[str, Any], alpha: float = 0.01,
                  status: MonitorStatus | None = None, live: list[dict] | None = None) -> str:
    """The whole report as one HTML page (with the monitor's status and live accuracy when given)."""
    windows = [{"window": v["index"], "end": str(v.get("end", ""))[11:19], "rows": v["rows"],
                "reference": v["reference_version"], "served": ",".join(v.get("served_versions", [])),
                "p inputs": v["detectors"].get("inputs"), "p predictions": v["detectors"].get("predictions"),
                "p accuracy": v["detectors"].get("accuracy"), "accuracy": v.get("accuracy"),
                "drift": v["drift"], "alarm": v["alarm"],
                "drifted features": ", ".join(v.get("drifted_features", [])[:5])} for v in verdicts]
    facts = [{"figure": k, "value": v} for k, v in summary.items() if k != "title"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{_esc(summary.get("title", "ray_mlops drift report"))}</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;font-size:12px;margin:1em 0}}
td,th{{border:1px solid #ddd;padding:3px 6px;text-align:left}} th{{background:#f3f3f3}} h2{{margin-top:1.6em}}</style>
</head><body>
<h1>{_esc(summary.get("title", "ray_mlops drift report"))}</h1>
<h2>Summary</h2>{_table(facts, ["figure", "value"])}
{live_section(live)}
{status_section(status)}
<h2>Drift per window</h2>
<p>Family p-value of each detector per window (inputs: KS/chi-squared over every feature, Bonferroni;
predictions: KS on P(last class), on the values (regression), or chi-squared on the predicted labels + KS
on the largest probability (multi-class); accuracy: one-sided Fisher exact on feedback labels, or one-sided
Mann-Whitney on absolute errors (regression)).
Each detector is tested at alpha/3.</p>
{pvalue_chart(verdicts, alpha)}
<h2>Drift per feature</h2>{heatmap(verdicts)}
<h2>Timeline</h2>{_table(timeline, ["t", "event", "detail"])}
<h2>Windows</h2>{_table(windows, list(windows[0]) if windows else ["window"])}
</body></html>
"""


__all__ = ["accuracy_chart", "render_report", "status_section", "pvalue_chart", "heatmap", "live_section"]
