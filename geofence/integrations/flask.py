"""The Flask extension: ``Geofence(app)`` or ``Geofence().init_app(app)``.

Configured from ``app.config["GEOFENCE"]``, a dict with the keys of
:mod:`geofence.integrations.settings` (the same as Django's
``settings.GEOFENCE``: ``policy``, ``snapshot``, ``trusted_proxies``,
``exempt_paths``...), or from an engine and keyword options given to the
constructor. It wraps ``app.wsgi_app`` with
:class:`~geofence.integrations.wsgi.GeofenceWSGIMiddleware`, so requests are
decided before Flask routes them, and puts the decision on ``g.geofence`` and
the route target on ``g.geofence_route`` for views. Examples are in
``docs/middleware.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Unpack

from flask import Flask, g, request

from geofence.integrations.config import GeofenceConfig, GeofenceOptions, resolve_config
from geofence.integrations.settings import build_settings
from geofence.integrations.wsgi import DECISION_KEY, ROUTE_KEY, GeofenceWSGIMiddleware

if TYPE_CHECKING:
    from geofence.decision import Decision
    from geofence.engine import Geofence as Engine
    from geofence.integrations.gate import Gate

__all__ = ["CONFIG_KEY", "Geofence", "current_decision", "current_route"]

CONFIG_KEY = "GEOFENCE"
"""``app.config`` key of the settings mapping."""

EXTENSION_KEY = "geofence"
"""Key of the extension in ``app.extensions``."""


class Geofence:
    """The geofence Flask extension.

    With no engine, :meth:`init_app` builds one per application from
    ``app.config["GEOFENCE"]``; with an engine (and options), every
    application it is installed on shares that engine.

    Args:
        app: Install on this application now (else call :meth:`init_app`).
        geofence: A ready engine (instead of ``app.config["GEOFENCE"]``).
        config: Settings; alternatively pass the options as keywords.
        **options: :class:`~geofence.integrations.config.GeofenceOptions`.

    Raises:
        ValueError: An option is invalid, or options are given without an engine.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        geofence: Engine | None = None,
        config: GeofenceConfig | None = None,
        **options: Unpack[GeofenceOptions],
    ) -> None:
        if geofence is None and (config is not None or options):
            raise ValueError("options need an engine: pass geofence=..., or use app.config")
        self._engine = geofence
        self._config = resolve_config(config, options) if geofence is not None else None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Install on ``app``: wrap its WSGI app and expose the decision on ``g``.

        Raises:
            RuntimeError: Geofence is already installed on ``app``.
            SettingsError: ``app.config["GEOFENCE"]`` is invalid.
            GeofenceError: Its policy or snapshot cannot be loaded.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("geofence is already installed on this Flask app")
        if self._engine is not None and self._config is not None:
            engine, config = self._engine, self._config
        else:
            engine, config = build_settings(app.config.get(CONFIG_KEY), name=CONFIG_KEY)
        middleware = GeofenceWSGIMiddleware(
            app.wsgi_app, geofence=engine, config=config, integration="flask"
        )
        # Flask documents replacing wsgi_app as the way to add WSGI middleware;
        # mypy sees a method being replaced by an instance.
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.extensions[EXTENSION_KEY] = middleware
        app.before_request(_expose)

    @staticmethod
    def gate(app: Flask) -> Gate:
        """The gate installed on ``app``.

        Raises:
            KeyError: Geofence is not installed on ``app``.
        """
        middleware: GeofenceWSGIMiddleware = app.extensions[EXTENSION_KEY]
        return middleware.gate


def _expose() -> Any:
    """``before_request``: the middleware's decision and route target on ``g``."""
    g.geofence = request.environ.get(DECISION_KEY)
    g.geofence_route = request.environ.get(ROUTE_KEY)
    return None


def current_decision() -> Decision | None:
    """The decision for the current request (``None`` on exempt paths or without geofence)."""
    decision: Decision | None = request.environ.get(DECISION_KEY)
    return decision


def current_route() -> str | None:
    """The route target for the current request, or ``None``."""
    route: str | None = request.environ.get(ROUTE_KEY)
    return route
