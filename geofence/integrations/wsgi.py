"""WSGI middleware (Flask, Bottle, Pyramid, any PEP 3333 application).

Flask: the :class:`geofence.integrations.flask.Geofence` extension installs it. Examples are in
``docs/middleware.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Unpack

from geofence.integrations.config import GeofenceConfig, GeofenceOptions, resolve_config
from geofence.integrations.gate import Gate

if TYPE_CHECKING:
    from geofence.engine import Geofence

__all__ = ["DECISION_KEY", "ROUTE_KEY", "GeofenceWSGIMiddleware", "environ_headers"]

# Spelled as PEP 3333 and typeshed's wsgiref.types spell them.
# Any: a WSGI environ holds values of many types by specification.
Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

DECISION_KEY = "geofence.decision"
"""Environ key of the :class:`~geofence.decision.Decision` (``None`` on exempt paths)."""

ROUTE_KEY = "geofence.route"
"""Environ key of the route target (``None`` when there is none)."""


def environ_headers(environ: Environ) -> Iterator[tuple[str, str]]:
    """Request headers of a WSGI environ as ``(name, value)`` pairs.

    ``HTTP_X_FORWARDED_FOR`` becomes ``x-forwarded-for``; ``CONTENT_TYPE`` and
    ``CONTENT_LENGTH`` are included. Note that WSGI folds ``-`` and ``_`` in
    names together: configure trusted proxies to overwrite, not append to,
    the headers you trust.
    """
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            yield key[5:].replace("_", "-").lower(), value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            yield key.replace("_", "-").lower(), value


def environ_key(header: str) -> str:
    """The environ key of a request header (``X-Geofence-Route`` -> ``HTTP_X_GEOFENCE_ROUTE``)."""
    return "HTTP_" + header.upper().replace("-", "_")


class GeofenceWSGIMiddleware:
    """Decide every request before the WSGI application.

    ``deny`` is answered with 451 (RFC 7725), ``challenge`` with the configured
    challenge; the application is not called. Otherwise the application is
    called with the decision in ``environ["geofence.decision"]``, the route
    target in ``environ["geofence.route"]`` and in the route header
    (``environ["HTTP_X_GEOFENCE_ROUTE"]``) for upstream routers. A route header
    sent by the client is always removed. Both keys are ``None`` on exempt paths.
    The client peer is ``REMOTE_ADDR``; the path is ``PATH_INFO``.

    Args:
        app: The WSGI application.
        geofence: The engine (the default one when ``route_policies`` is set).
        config: Settings; alternatively pass the options as keywords.
        integration: Name recorded in audit lines (``"flask"`` from the extension).
        **options: :class:`~geofence.integrations.config.GeofenceOptions`.

    Raises:
        ValueError: An option is invalid, or both ``config`` and options are given.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        geofence: Geofence,
        config: GeofenceConfig | None = None,
        integration: str = "wsgi",
        **options: Unpack[GeofenceOptions],
    ) -> None:
        self.app = app
        self.config = resolve_config(config, options)
        self.gate = Gate(geofence, self.config, integration=integration)
        self._route_key = environ_key(self.config.route_header)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Handle one WSGI request."""
        verdict = self.gate.check(
            kind="http",
            method=environ.get("REQUEST_METHOD", "GET"),
            path=environ.get("PATH_INFO", "") or "/",
            peer=environ.get("REMOTE_ADDR") or None,
            headers=list(environ_headers(environ)),
            native=environ,
        )
        environ[DECISION_KEY] = verdict.decision
        environ[ROUTE_KEY] = verdict.route
        environ.pop(self._route_key, None)  # never let a client choose its route
        if verdict.route is not None:
            environ[self._route_key] = verdict.route
        reply = verdict.reply
        if reply is not None:
            headers = [*reply.headers, ("Content-Length", str(len(reply.body)))]
            start_response(reply.status_line, headers)
            return [reply.body]
        extra = verdict.response_headers
        if not extra:
            return self.app(environ, start_response)

        def start_with_headers(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            return start_response(status, [*headers, *extra], exc_info)

        return self.app(environ, start_with_headers)
