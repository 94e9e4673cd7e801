"""Deploying, hot-swapping and removing the inference application.

The application is always deployed from a standard Serve config (the document
:func:`serve_config` returns and ``ray-mlops serve --export`` writes for ``serve deploy``):
``import_path: ray_mlops.serve.app:build_app`` with the project config as ``args`` and
``user_config: {"version": "vN"}``. Because the code version of a declarative app is
its import path and runtime environment, :func:`swap` changes only ``user_config``:
running replicas are reconfigured in place (load, verify, warm up, switch), nothing is
restarted. Other declaratively deployed applications are carried over unchanged.
:func:`set_shadow` loads (or removes) a shadow version beside production the same way
(``user_config: {"version": "v3", "shadow": "v4"}``); a swap of production removes it.

The caller connects to Ray first (``ray_mlops.runtime.connect``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from ray_mlops.config import Config
from ray_mlops.errors import RayMlopsError, ServingError
from ray_mlops.registry import Registry
from ray_mlops.serve.ids import new_secret, token_digest
from ray_mlops.storage import Storage

IMPORT_PATH = "ray_mlops.serve.app:build_app"
TOKEN_ENV = "RAY_MLOPS_TOKEN"
DEPLOYMENT = "Predictor"


def absolute_storage(config: Config) -> Config:
    """``config`` with a local relative storage path made absolute (replicas run elsewhere)."""
    storage = Storage(config.storage)
    return config.model_copy(update={"storage": storage.uri()}) if storage.is_local else config


def resolve_version(config: Config, ref: str) -> str:
    """The concrete version ``ref`` (a version or alias) names in the registry."""
    try:
        return Registry(Storage(config.storage), config.model_name).resolve(ref)
    except RayMlopsError as exc:
        raise ServingError(f"cannot serve {ref!r}: {exc}; train and promote a model first") from exc


def _token(config: Config) -> str | None:
    return config.serve.token or os.environ.get(TOKEN_ENV) or None


def application(config: Config, version: str, *, secret: str | None = None) -> dict[str, Any]:
    """The ``applications[]`` entry of a Serve config for ``config`` serving ``version``."""
    from ray_mlops.serve.app import deployment_options

    token = _token(config)
    args: dict[str, Any] = {"config": config.without_secrets().model_dump(mode="json"), "secret": secret or new_secret()}
    if token:
        args["token_sha256"] = token_digest(token)
    return {
        "name": config.serve.app_name,
        "route_prefix": config.serve.route_prefix,
        "import_path": IMPORT_PATH,
        "args": args,
        "deployments": [{"name": DEPLOYMENT, "user_config": {"version": version}, **deployment_options(config)}],
    }


def serve_config(config: Config, version: str = "production", *, secret: str | None = None) -> dict[str, Any]:
    """A complete Serve config file (for ``serve deploy``) serving ``version``."""
    config = absolute_storage(config)
    return {
        "proxy_location": config.serve.proxy_location,
        "http_options": {"host": config.serve.host, "port": config.serve.port},
        "applications": [application(config, version, secret=secret)],
    }


def write_serve_config(config: Config, path: str | Path, version: str = "production") -> Path:
    """Write :func:`serve_config` as YAML (it holds the request-id secret: keep it private)."""
    target = Path(path)
    target.write_text(yaml.safe_dump(serve_config(config, version), sort_keys=False), encoding="utf-8")
    target.chmod(0o600)
    return target


# -- talking to Serve ---------------------------------------------------------------
def _client() -> Any:
    from ray.serve.context import _get_global_client

    return _get_global_client(raise_if_no_controller_running=False)


def _app_details(name: str) -> dict | None:
    client = _client()
    if client is None:
        return None
    return client.get_serve_details().get("applications", {}).get(name)


def _declarative_apps(except_name: str) -> list[dict]:
    apps = (_client().get_serve_details() or {}).get("applications", {})
    return [d["deployed_app_config"] for n, d in apps.items()
            if n != except_name and d.get("source") == "declarative" and d.get("deployed_app_config")]


def _apply(app: dict) -> float:
    from ray.serve.schema import ServeDeploySchema

    others = _declarative_apps(app["name"])
    schema = ServeDeploySchema.model_validate({"applications": [*others, app]})
    started = time.time()
    _client().deploy_apps(schema)
    return started


def _wait_running(name: str, since: float, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        details = _app_details(name) or {}
        status = _plain(details.get("status"))
        if status == "RUNNING" and details.get("last_deployed_time_s", 0) >= since - 1:
            return details
        if status == "DEPLOY_FAILED":
            raise ServingError(f"application {name} failed to deploy: {details.get('message', '')[-2000:]}")
        if time.monotonic() > deadline:
            raise ServingError(f"application {name} not running after {timeout_s:.0f}s (status {status})")
        time.sleep(0.5)


def _url(config: Config) -> str:
    http = _client().http_config
    host = "127.0.0.1" if http.host in ("0.0.0.0", "::") else http.host
    return f"http://{host}:{http.port}{config.serve.route_prefix.rstrip('/')}"


def _running_app_config(name: str) -> dict | None:
    details = _app_details(name)
    return (details or {}).get("deployed_app_config")


def deploy(config: Config, version: str = "production", *, timeout_s: float = 180.0) -> str:
    """Deploy (or update) the application serving ``version``; returns its base URL.

    Starts Serve with ``config.serve``'s host and port when it is not running yet (a
    running Serve keeps its own HTTP options). The version is resolved once here, so
    every replica, including those autoscaling adds later, serves the same one.
    """
    from ray import serve

    config = absolute_storage(config)
    concrete = resolve_version(config, version)
    serve.start(proxy_location=config.serve.proxy_location,
                http_options={"host": config.serve.host, "port": config.serve.port})
    running = _running_app_config(config.serve.app_name)
    secret = (running or {}).get("args", {}).get("secret")  # keep issued request ids valid
    since = _apply(application(config, concrete, secret=secret))
    _wait_running(config.serve.app_name, since, timeout_s)
    return _url(config)


def _served_versions(name: str, probes: int) -> list[dict]:
    from ray import serve

    handle = serve.get_app_handle(name)
    return [handle.health.remote().result(timeout_s=30) for _ in range(probes)]


def swap(config: Config, version: str, *, timeout_s: float = 120.0) -> str:
    """Point the running application at ``version`` by changing ``user_config`` only.

    Replicas load, verify (sha256) and warm up the version, then switch atomically;
    requests keep flowing. Returns the concrete version now served. When the version
    fails to load, replicas keep the old one, ``user_config`` is put back, and a
    :class:`ServingError` carries the replicas' message (also in ``/health``).
    """
    config = absolute_storage(config)
    name = config.serve.app_name
    running = _running_app_config(name)
    if running is None:
        raise ServingError(f"application {name} is not deployed: run `ray-mlops serve` first")
    concrete = resolve_version(config, version)
    previous = running["deployments"][0].get("user_config", {}).get("version")
    _apply(_with_version(running, concrete))
    failure = _wait_swapped(name, concrete, timeout_s)
    if failure is not None:
        if previous:
            _apply(_with_version(running, previous))
        raise ServingError(f"swap to {concrete} failed; still serving {previous}: {failure}")
    return concrete


def _with_version(app: dict, version: str, shadow: str | None = None) -> dict:
    user_config = {"version": version} if shadow is None else {"version": version, "shadow": shadow}
    updated = dict(app)
    updated["deployments"] = [{**d, "user_config": user_config} if d.get("name") == DEPLOYMENT else d
                              for d in app["deployments"]]
    return updated


def set_shadow(config: Config, version: str | None, *, timeout_s: float = 120.0) -> str | None:
    """Load ``version`` as the shadow beside production in every replica (None: remove the shadow).

    Returns the concrete shadow version. When it fails to load, production keeps serving
    alone, ``/health`` says so, and a :class:`ServingError` carries the replicas' message.
    """
    config = absolute_storage(config)
    name = config.serve.app_name
    running = _running_app_config(name)
    if running is None:
        raise ServingError(f"application {name} is not deployed: run `ray-mlops serve` first")
    concrete = None if version is None else resolve_version(config, version)
    production = running["deployments"][0].get("user_config", {}).get("version")
    _apply(_with_version(running, production, concrete))
    failure = _wait_shadowed(name, concrete, timeout_s)
    if failure is not None:
        raise ServingError(f"shadow {concrete} failed to load; production {production} serves alone: {failure}")
    return concrete


def _wait_shadowed(name: str, version: str | None, timeout_s: float) -> str | None:
    """Poll replicas until they all report ``version`` as their shadow (None) or one reports its failure."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = [h.get("shadow") or {} for h in _served_versions(name, probes=3 * max(1, _running_replicas(name)) + 2)]
        failures = [s["error"]["error"] for s in seen if s.get("error") and s["error"].get("version") == version]
        if failures:
            return failures[0]
        if all(s.get("version") == version for s in seen):
            return None
        if time.monotonic() > deadline:
            raise ServingError(f"replicas of {name} did not load shadow {version} within {timeout_s:.0f}s")
        time.sleep(0.3)


def _wait_swapped(name: str, version: str, timeout_s: float) -> str | None:
    """Poll replicas until they all report ``version`` (None) or one reports its failure."""
    deadline = time.monotonic() + timeout_s
    while True:
        replicas = max(1, _running_replicas(name))
        seen = _served_versions(name, probes=3 * replicas + 2)
        failures = [h["last_swap_error"]["error"] for h in seen
                    if h.get("last_swap_error") and h["last_swap_error"].get("version") == version]
        if failures:
            return failures[0]
        if all(h["model_version"] == version for h in seen):
            return None
        if time.monotonic() > deadline:
            raise ServingError(f"replicas of {name} did not switch to {version} within {timeout_s:.0f}s")
        time.sleep(0.3)


def _running_replicas(name: str) -> int:
    details = _app_details(name) or {}
    replicas = details.get("deployments", {}).get(DEPLOYMENT, {}).get("replicas", [])
    return sum(1 for r in replicas if _plain(r.get("state")) == "RUNNING")


def status(config: Config) -> dict[str, Any]:
    """What is deployed: app status, replicas, and the version in ``user_config``."""
    details = _app_details(config.serve.app_name)
    if details is None:
        return {"app": config.serve.app_name, "status": "NOT_DEPLOYED"}
    deployment = details.get("deployments", {}).get(DEPLOYMENT, {})
    user_config = (details.get("deployed_app_config") or {}).get("deployments", [{}])[0].get("user_config") or {}
    return {"app": config.serve.app_name, "status": _plain(details.get("status")), "version": user_config.get("version"),
            "shadow": user_config.get("shadow"),
            "replicas": _running_replicas(config.serve.app_name),
            "deployment_status": _plain(deployment.get("status")), "url": _url(config)}


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def shutdown(config: Config, *, timeout_s: float = 60.0) -> dict[str, bool]:
    """Remove the application (its replicas flush their logs); absent is fine.

    The monitor is not touched here: ``ray_mlops.loop.shutdown`` stops it afterwards
    through ``stop_monitor``, which takes its last checkpoint.
    """
    from ray import serve

    removed = False
    if _app_details(config.serve.app_name) is not None:
        serve.delete(config.serve.app_name)
        removed = True
    return {"app_removed": removed}


__all__ = [
    "deploy",
    "swap",
    "set_shadow",
    "shutdown",
    "status",
    "serve_config",
    "write_serve_config",
    "application",
    "resolve_version",
    "IMPORT_PATH",
]
