"""Django middleware configured from ``settings.GEOFENCE``, with system checks.

Add ``"geofence.integrations.django.GeofenceAppConfig"`` to ``INSTALLED_APPS``
(its system checks load and validate the configuration at start-up, so
``manage.py check`` fails on a mistyped policy name) and
``"geofence.integrations.django.GeofenceMiddleware"`` to ``MIDDLEWARE`` (early,
before anything that does work for the request). ``settings.GEOFENCE`` takes
the keys of :mod:`geofence.integrations.settings`; hooks receive a
:class:`~geofence.integrations.request.RequestInfo` whose ``native`` is the
``HttpRequest``.

The gate is built once per process by the system check or the first request
(or :func:`get_gate`), and rebuilt when the ``GEOFENCE`` setting is overridden
in tests. The decision is ``request.geofence`` and the route target
``request.geofence_route`` (both ``None`` on exempt paths); the route target is
also put in the route request header (``request.META["HTTP_X_GEOFENCE_ROUTE"]``).
Examples are in ``docs/middleware.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

# Django ships without type information (no py.typed); the names it gives are Any.
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.apps import AppConfig  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]
from django.core import checks  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.core.signals import setting_changed  # type: ignore[import-untyped]
from django.http import HttpResponse, HttpResponseRedirect  # type: ignore[import-untyped]

from geofence.errors import GeofenceError
from geofence.integrations.gate import Gate, Verdict
from geofence.integrations.settings import SettingsError, build_gate
from geofence.integrations.wsgi import environ_headers, environ_key

__all__ = ["GeofenceAppConfig", "GeofenceMiddleware", "check_settings", "get_gate", "reset"]

MIDDLEWARE_PATH = "geofence.integrations.django.GeofenceMiddleware"

_lock = threading.Lock()
_gate: Gate | None = None


def _build() -> Gate:
    """Build the gate from ``settings.GEOFENCE``."""
    raw = getattr(settings, "GEOFENCE", None)
    try:
        return build_gate({} if raw is None else raw, integration="django", name="GEOFENCE")
    except SettingsError as exc:
        raise ImproperlyConfigured(f"settings.{exc}") from exc


def get_gate() -> Gate:
    """The process-wide gate, built from ``settings.GEOFENCE`` on first use.

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


# --------------------------------------------------------------------------- system checks


def check_settings(app_configs: Sequence[Any] | None = None, **_: object) -> list[Any]:
    """Django system check: ``settings.GEOFENCE`` builds a working gate.

    Loads the snapshot and the policy (the gate is kept for the requests that
    follow), so a mistyped preset name, a missing file or an invalid option
    fails ``manage.py check``, ``runserver`` and ``migrate`` instead of the
    first request.

    Returns:
        ``geofence.E001`` for invalid settings, ``geofence.E002`` for a policy
        or snapshot that cannot be loaded, ``geofence.W001`` when the settings
        exist but the middleware is not installed.
    """
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    has_settings = getattr(settings, "GEOFENCE", None) is not None
    if MIDDLEWARE_PATH not in middleware:
        if not has_settings:
            return []
        return [
            checks.Warning(
                "settings.GEOFENCE is set but the geofence middleware is not installed",
                hint=f"Add {MIDDLEWARE_PATH!r} to MIDDLEWARE, early.",
                id="geofence.W001",
            )
        ]
    try:
        get_gate()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="geofence.E001")]
    except GeofenceError as exc:
        return [
            checks.Error(
                f"settings.GEOFENCE: {exc}",
                hint="Check the policy (a preset name, a TOML path) and the snapshot path; "
                "`geofence policy check --list` lists the presets.",
                id="geofence.E002",
            )
        ]
    return []


checks.register(check_settings, "geofence")


class GeofenceAppConfig(AppConfig):  # type: ignore[misc]  # Django's AppConfig is untyped
    """The app whose system checks validate ``settings.GEOFENCE`` at start-up."""

    name = "geofence.integrations.django"
    label = "geofence"
    verbose_name = "geofence"

    def ready(self) -> None:
        """Register the system check (importing this module already did; idempotent)."""
        checks.register(check_settings, "geofence")


# --------------------------------------------------------------------------- middleware


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
        gate = get_gate()
        verdict = gate.check(**_request_fields(request))
        _attach(request, verdict, gate)
        if verdict.reply is not None:
            return _response(verdict)
        return _add_headers(self.get_response(request), verdict)

    async def __acall__(self, request: Any) -> Any:
        """The async path: decisions with a context await the engine (asyncio stores)."""
        gate = get_gate()
        fields = _request_fields(request)
        native = fields.pop("native")
        verdict = gate.fast_check(**fields)
        if verdict is None:
            verdict = await gate.acheck(**fields, native=native)
        _attach(request, verdict, gate)
        if verdict.reply is not None:
            return _response(verdict)
        return _add_headers(await self.get_response(request), verdict)


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
    location = next((v for k, v in reply.headers if k.lower() == "location"), None)
    if location is not None:  # Django's redirect type, which its test client can follow
        response = HttpResponseRedirect(location, reply.body, status=reply.status)
    else:
        response = HttpResponse(reply.body, status=reply.status)
    for name, value in reply.headers:
        response[name] = value
    return response


def _add_headers(response: Any, verdict: Verdict) -> Any:
    for name, value in verdict.response_headers:
        response[name] = value
    return response
