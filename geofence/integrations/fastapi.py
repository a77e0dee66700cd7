"""FastAPI dependencies: per-route geofencing, and routing by the decision's target.

``Depends(GeofenceDependency(geofence, ...))`` decides the request of the
route it is attached to; use it where only some routes are restricted, or
where the decision needs the authenticated subject other dependencies
produce. Use the ASGI middleware
(:class:`geofence.integrations.asgi.GeofenceMiddleware`) to cover a whole
application. ``Depends(RouteDependency(table))`` gives a view what serves its
request's route target (a model, an upstream URL). Examples are in
``docs/middleware.md``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Generic, TypeVar, Unpack

from fastapi import HTTPException, WebSocketException
from starlette.requests import HTTPConnection

from geofence.decision import Decision
from geofence.integrations.asgi import WS_POLICY_VIOLATION
from geofence.integrations.config import GeofenceConfig, GeofenceOptions, resolve_config
from geofence.integrations.gate import Gate
from geofence.integrations.replies import Reply
from geofence.integrations.routing import RouteTable

if TYPE_CHECKING:
    from geofence.engine import Geofence

__all__ = ["GeofenceDependency", "RouteDependency"]

T = TypeVar("T")


class GeofenceDependency:
    """Decide the request of the route it is attached to.

    The dependency returns the :class:`~geofence.decision.Decision` (``None``
    on exempt paths) and sets ``request.state.geofence`` and
    ``request.state.geofence_route``. A ``deny`` or ``challenge`` raises an
    ``HTTPException`` with the middleware's status, headers and body: FastAPI
    renders its ``detail`` as ``{"detail": ...}``, the very body the
    middleware sends (one shape, see :mod:`geofence.integrations.replies`).
    On websocket routes a refusal raises ``WebSocketException(1008)``.

    The route header cannot be added to the request here (the request is
    already routed); read ``request.state.geofence_route`` or use
    :class:`RouteDependency`. Options that act on responses
    (``decision_header``, ``route_response_header``) apply to refusals only.

    Args:
        geofence: The engine.
        config: Settings; alternatively pass the options as keywords.
        **options: :class:`~geofence.integrations.config.GeofenceOptions`.

    Raises:
        ValueError: An option is invalid, or both ``config`` and options are given.
    """

    def __init__(
        self,
        geofence: Geofence,
        *,
        config: GeofenceConfig | None = None,
        **options: Unpack[GeofenceOptions],
    ) -> None:
        self.config = resolve_config(config, options)
        self.gate = Gate(geofence, self.config, integration="fastapi")

    async def __call__(self, request: HTTPConnection) -> Decision | None:
        """Decide the request; raise when it must not be served."""
        scope = request.scope
        client = scope.get("client")
        fields = {
            "kind": scope["type"],
            "method": scope.get("method", "GET"),
            "path": scope.get("path", "/"),
            "peer": client[0] if client else None,
            "headers": scope.get("headers") or [],
        }
        verdict = self.gate.fast_check(**fields)
        if verdict is None:
            verdict = await self.gate.acheck(**fields, native=request)
        request.state.geofence = verdict.decision
        request.state.geofence_route = verdict.route
        reply = verdict.reply
        if reply is None:
            return verdict.decision
        if scope["type"] == "websocket":
            decision = verdict.decision
            reason = decision.reasons[0] if decision is not None and decision.reasons else ""
            raise WebSocketException(code=WS_POLICY_VIOLATION, reason=reason[:123])
        raise HTTPException(
            status_code=reply.status, detail=_detail(reply), headers=_headers(reply)
        )


class RouteDependency(Generic[T]):
    """What serves the request's route target, from a :class:`RouteTable`.

    Reads ``request.state.geofence_route`` (set by the middleware or by a
    :class:`GeofenceDependency` listed before it) and returns the table's
    entry for it, or the table's default for requests that are not routed.

    Args:
        table: Route targets -> what serves them.

    Raises:
        UnknownRouteError: (when called) the target has no entry in the table.
    """

    def __init__(self, table: RouteTable[T]) -> None:
        self.table = table

    def __call__(self, request: HTTPConnection) -> T:
        """The table's entry for this request's route target."""
        return self.table.resolve(getattr(request.state, "geofence_route", None))


def _headers(reply: Reply) -> dict[str, str]:
    """Reply headers for HTTPException, minus the body's own Content-Type."""
    return {k: v for k, v in reply.headers if k.lower() != "content-type"}


def _detail(reply: Reply) -> object:
    """The ``detail`` of the reply's body: FastAPI wraps it back into the same body."""
    text = reply.body.decode("utf-8", "replace")
    if reply.content_type.startswith("application/json"):
        try:
            body = json.loads(text)
        except ValueError:
            return text
        return body["detail"] if isinstance(body, dict) and set(body) == {"detail"} else body
    return text or None
