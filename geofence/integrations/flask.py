"""Flask helpers: install the WSGI middleware and read its decision.

``init_app(app, geofence, **options)`` wraps ``app.wsgi_app`` with
:class:`~geofence.integrations.wsgi.GeofenceWSGIMiddleware`; inside a request,
:func:`current_decision` and :func:`current_route` read what it decided.
Examples are in ``docs/middleware.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Unpack

from flask import Flask, request

from geofence.integrations.common import GeofenceOptions
from geofence.integrations.wsgi import DECISION_KEY, ROUTE_KEY, GeofenceWSGIMiddleware

if TYPE_CHECKING:
    from geofence.decision import Decision
    from geofence.engine import Geofence

__all__ = ["current_decision", "current_route", "init_app"]

EXTENSION_KEY = "geofence"
"""Key of the middleware in ``app.extensions``."""


def init_app(
    app: Flask, geofence: Geofence, **options: Unpack[GeofenceOptions]
) -> GeofenceWSGIMiddleware:
    """Wrap ``app.wsgi_app`` with the geofence WSGI middleware.

    Args:
        app: The Flask application.
        geofence: The engine.
        **options: :class:`~geofence.integrations.common.GeofenceOptions`.

    Returns:
        The middleware (also stored in ``app.extensions["geofence"]``).

    Raises:
        RuntimeError: The middleware is already installed on ``app``.
        ValueError: An option is invalid.
    """
    if EXTENSION_KEY in app.extensions:
        raise RuntimeError("geofence is already installed on this Flask app")
    middleware = GeofenceWSGIMiddleware(app.wsgi_app, geofence=geofence, **options)
    # Flask documents replacing wsgi_app as the way to add WSGI middleware;
    # mypy sees a method being replaced by an instance.
    app.wsgi_app = middleware  # type: ignore[method-assign]
    app.extensions[EXTENSION_KEY] = middleware
    return middleware


def current_decision() -> Decision | None:
    """The decision for the current request (``None`` on exempt paths or without middleware)."""
    decision: Decision | None = request.environ.get(DECISION_KEY)
    return decision


def current_route() -> str | None:
    """The route target for the current request, or ``None``."""
    route: str | None = request.environ.get(ROUTE_KEY)
    return route
