"""Django middleware configured from ``settings.GEOFENCE``.

Add ``"geofence.integrations.django.GeofenceMiddleware"`` to ``MIDDLEWARE``
(early, before anything that does work for the request) and describe the
engine and options in ``settings.GEOFENCE``::

    GEOFENCE = {
        "policy": "path/to/policy.toml",       # or a preset name, or a Policy
        "snapshot": None,                      # None = bundled data; or a path
        "trusted_proxies": ["10.0.0.0/8"],     # or {"cidrs": [...], "hops": 1}
        "exempt_paths": ["/healthz"],
        "blocked_by": "https://example.com/legal/geo",
    }

Keys:

* engine: ``policy`` (required), ``snapshot``, ``cache_size``, or instead
  ``engine``: a ready :class:`~geofence.engine.Geofence` or a dotted path to a
  zero-argument callable returning one; ``watch`` (seconds between file-change
  checks for hot reload, off by default); ``route_policies`` (path prefix ->
  policy reference on the same snapshot, or a ``Geofence``);
* every :class:`~geofence.integrations.common.GeofenceOptions` key; the hooks
  (``challenge``, ``subject``, ``router``) may be dotted paths, and receive a
  :class:`~geofence.integrations.common.RequestInfo` whose ``native`` is the
  ``HttpRequest``;
* ``audit``: ``False`` to disable, a mapping of
  :class:`~geofence.integrations.common.AuditLogger` arguments, or an instance;
  ``metrics``: ``True`` or a :class:`~geofence.integrations.common.PrometheusMetrics`.

The engine is built lazily, once per process, on the first request (or by
:func:`get_gate`), and rebuilt when the ``GEOFENCE`` setting is overridden in
tests. The decision is ``request.geofence`` and the route target
``request.geofence_route`` (both ``None`` on exempt paths); the route target is
also put in the route request header (``request.META["HTTP_X_GEOFENCE_ROUTE"]``).
Examples are in ``docs/middleware.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

# Django ships without type information (no py.typed); the names it gives are Any.
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.core.signals import setting_changed  # type: ignore[import-untyped]
from django.http import HttpResponse  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

from geofence.integrations.common import (
    AuditLogger,
    Gate,
    GeofenceConfig,
    Verdict,
)
from geofence.integrations.wsgi import environ_headers, environ_key

__all__ = ["GeofenceMiddleware", "get_gate", "reset"]

_ENGINE_KEYS = frozenset({"policy", "snapshot", "cache_size", "watch", "route_policies", "engine"})
_HOOKS = ("challenge", "subject", "router")

_lock = threading.Lock()
_gate: Gate | None = None


def _import(ref: str, what: str) -> Any:
    """Import a dotted path named in the settings."""
    try:
        return import_string(ref)
    except ImportError as exc:
        raise ImproperlyConfigured(f"settings.GEOFENCE[{what!r}]: cannot import {ref!r}") from exc


def _build() -> Gate:
    """Build the gate from ``settings.GEOFENCE``."""
    from geofence.engine import Geofence
    from geofence.snapshot.reader import Snapshot

    raw = getattr(settings, "GEOFENCE", None)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"settings.GEOFENCE must be a dict, got {raw!r}")
    options: dict[str, Any] = {k: v for k, v in raw.items() if k not in _ENGINE_KEYS}
    for name in _HOOKS:
        if isinstance(options.get(name), str):
            options[name] = _import(options[name], name)
    audit = options.get("audit")
    if audit is False:
        options["audit"] = None
    elif isinstance(audit, Mapping):
        options["audit"] = AuditLogger(**audit)

    engine_ref = raw.get("engine")
    cache_size = raw.get("cache_size", 0)
    if engine_ref is not None:
        clash = sorted({"policy", "snapshot", "cache_size"} & set(raw))
        if clash:
            raise ImproperlyConfigured(f"settings.GEOFENCE: 'engine' excludes {clash}")
        engine = _import(engine_ref, "engine")() if isinstance(engine_ref, str) else engine_ref
        if not isinstance(engine, Geofence):
            raise ImproperlyConfigured(
                f"settings.GEOFENCE['engine'] gave {engine!r}, not a Geofence"
            )
        snap = engine.snapshot
    else:
        if "policy" not in raw:
            # No silent allow-all: a compliance control must name its policy.
            raise ImproperlyConfigured(
                "settings.GEOFENCE needs 'policy' (a preset name, a TOML path or a Policy) "
                "or 'engine'"
            )
        snapshot = raw.get("snapshot")
        snap = (
            snapshot
            if isinstance(snapshot, Snapshot)
            else (Snapshot.default() if snapshot is None else Snapshot.open(snapshot))
        )
        engine = Geofence(snap, raw["policy"], cache_size=cache_size)
    routes = raw.get("route_policies") or {}
    if not isinstance(routes, Mapping):
        raise ImproperlyConfigured("settings.GEOFENCE['route_policies'] must be a dict")
    options["route_policies"] = {
        prefix: ref if isinstance(ref, Geofence) else Geofence(snap, ref, cache_size=cache_size)
        for prefix, ref in routes.items()
    }
    watch = raw.get("watch")
    if watch:
        engine.watch(float(watch))
    try:
        config = GeofenceConfig.from_options(**options)
    except ValueError as exc:
        raise ImproperlyConfigured(f"settings.GEOFENCE: {exc}") from exc
    return Gate(engine, config, integration="django")


def get_gate() -> Gate:
    """The process-wide gate, built from ``settings.GEOFENCE`` on first use.

    Call it at startup (``AppConfig.ready``) to load data before the first request.

    Raises:
        ImproperlyConfigured: ``settings.GEOFENCE`` is invalid.
        GeofenceError: The policy or snapshot cannot be loaded.
    """
    global _gate  # noqa: PLW0603 - one engine per process, by design
    gate = _gate
    if gate is None:
        with _lock:
            if _gate is None:
                _gate = _build()
            gate = _gate
    return gate


def reset() -> None:
    """Forget the process-wide gate; the next request builds it again."""
    global _gate
    with _lock:
        old, _gate = _gate, None
    if old is not None:
        old.geofence.close()


def _on_setting_changed(*, setting: str, **_: object) -> None:
    if setting == "GEOFENCE":
        reset()


setting_changed.connect(_on_setting_changed, dispatch_uid="geofence.integrations.django")


class GeofenceMiddleware:
    """Decide every request before the view (sync and async).

    ``deny`` is answered with 451 (RFC 7725) and ``challenge`` with the
    configured challenge; the view is not called. See the module docstring.

    Args:
        get_response: The next middleware or the view.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        # Any: Django's HttpRequest and HttpResponse are untyped.
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        """Handle one request (returns a coroutine when the stack is async)."""
        if self._async:
            return self.__acall__(request)
        verdict = self._check(request)
        if verdict.reply is not None:
            return _response(verdict)
        response = self.get_response(request)
        return _add_headers(response, verdict)

    async def __acall__(self, request: Any) -> Any:
        """The async path: decisions with a context await the engine (asyncio stores)."""
        gate = get_gate()
        verdict = await gate.acheck(**_request_fields(request))
        _attach(request, verdict, gate)
        if verdict.reply is not None:
            return _response(verdict)
        response = await self.get_response(request)
        return _add_headers(response, verdict)

    def _check(self, request: Any) -> Verdict:
        gate = get_gate()
        verdict = gate.check(**_request_fields(request))
        _attach(request, verdict, gate)
        return verdict


def _request_fields(request: Any) -> dict[str, Any]:
    """Gate.check keyword arguments for a Django request."""
    meta = request.META
    return {
        "kind": "http",
        "method": request.method or "GET",
        "path": request.path_info or "/",
        "peer": meta.get("REMOTE_ADDR") or None,
        "headers": list(environ_headers(meta)),
        "native": request,
    }


def _attach(request: Any, verdict: Verdict, gate: Gate) -> None:
    """Put the decision and route target on the request (and the route header in META)."""
    meta = request.META
    request.geofence = verdict.decision
    request.geofence_route = verdict.route
    key = environ_key(gate.config.route_header)
    meta.pop(key, None)  # never let a client choose its route
    if verdict.route is not None:
        meta[key] = verdict.route
    request.__dict__.pop("headers", None)  # HttpRequest.headers caches META


def _response(verdict: Verdict) -> Any:
    reply = verdict.reply
    if reply is None:  # pragma: no cover - callers check
        raise RuntimeError("no reply to send")
    response = HttpResponse(reply.body, status=reply.status)
    for name, value in reply.headers:
        response[name] = value
    return response


def _add_headers(response: Any, verdict: Verdict) -> Any:
    for name, value in verdict.response_headers:
        response[name] = value
    return response
