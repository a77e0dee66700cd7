"""A FastAPI dependency for per-route geofencing (``Depends(GeofenceDependency(...))``).

Use it where only some routes are restricted, or where the decision needs the
authenticated subject that other dependencies produce; use the ASGI
middleware (:class:`geofence.integrations.asgi.GeofenceMiddleware`) to cover a
whole application. Examples are in ``docs/middleware.md``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Unpack

from fastapi import HTTPException, WebSocketException
from starlette.requests import HTTPConnection

from geofence.decision import Decision
from geofence.integrations.asgi import WS_POLICY_VIOLATION
from geofence.integrations.common import (
    Gate,
    GeofenceConfig,
    GeofenceOptions,
    Reply,
    resolve_config,
)

if TYPE_CHECKING:
    from geofence.engine import Geofence

__all__ = ["GeofenceDependency"]


class GeofenceDependency:
    """Decide the request of the route it is attached to.

    The dependency returns the :class:`~geofence.decision.Decision` (``None``
    on exempt paths) and sets ``request.state.geofence`` and
    ``request.state.geofence_route``. A ``deny`` raises ``HTTPException(451)``
    whose ``detail`` is ``{"error": "unavailable_for_legal_reasons",
    "reason": <code>}`` (a string with ``body_format="plain"``) and whose
    headers carry ``Link: <...>; rel="blocked-by"`` when configured. A
    ``challenge`` raises the configured challenge as an ``HTTPException``
    (401 with ``WWW-Authenticate``, or a 303 redirect). On websocket routes a
    refusal raises ``WebSocketException(1008)`` instead.

    The route header cannot be added to the request here (the request is
    already routed); read ``request.state.geofence_route``. Options that act
    on responses (``decision_header``, ``route_response_header``) apply to
    refusals only.

    Args:
        geofence: The engine.
        config: Settings; alternatively pass the options as keywords.
        **options: :class:`~geofence.integrations.common.GeofenceOptions`.

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
        verdict = await self.gate.acheck(
            kind=scope["type"],
            method=scope.get("method", "GET"),
            path=scope.get("path", "/"),
            peer=client[0] if client else None,
            headers=scope.get("headers") or [],
            native=request,
        )
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


def _headers(reply: Reply) -> dict[str, str]:
    """Reply headers for HTTPException, minus the body's own Content-Type."""
    return {k: v for k, v in reply.headers if k.lower() != "content-type"}


def _detail(reply: Reply) -> object:
    """The reply body as an ``HTTPException.detail`` (parsed back when it is JSON)."""
    content_type = next((v for k, v in reply.headers if k.lower() == "content-type"), "")
    text = reply.body.decode("utf-8", "replace")
    if content_type.startswith("application/json"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text or None
