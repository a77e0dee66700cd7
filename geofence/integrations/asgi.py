"""Pure ASGI middleware (Starlette, FastAPI, any ASGI 3 application).

Needs no framework: it speaks the ASGI protocol directly, so it also wraps
Django's ASGI handler or a bare ASGI callable. Usage and examples are in
``docs/middleware.md``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from time import time as _now
from typing import TYPE_CHECKING, Any, Unpack

from geofence.integrations.config import GeofenceConfig, GeofenceOptions, resolve_config
from geofence.integrations.gate import Gate, Verdict
from geofence.integrations.replies import Reply

if TYPE_CHECKING:
    from geofence.engine import Geofence

__all__ = ["GeofenceMiddleware"]

# The ASGI types, spelled as starlette.types does, so no framework is needed.
# Any: ASGI messages and scopes are heterogeneous dicts by specification.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Close code for refused websocket handshakes without the denial-response
#: extension: 1008 "policy violation" (RFC 6455 §7.4.1).
WS_POLICY_VIOLATION = 1008


class GeofenceMiddleware:
    """Decide every HTTP request and websocket handshake before the application.

    * ``lifespan`` and other non-HTTP scopes pass through untouched.
    * ``deny`` is answered with 451 (RFC 7725), ``challenge`` with the
      configured challenge; the application is not called.
    * Otherwise the application is called with the decision in
      ``scope["state"]["geofence"]`` (``request.state.geofence`` in Starlette)
      and the route target in ``scope["state"]["geofence_route"]`` and in the
      route request header (``X-Geofence-Route``) for upstream routers. A route
      header sent by the client is always removed. Both state keys are ``None``
      on exempt paths.
    * Websocket handshakes are decided the same way. A refusal is sent as an
      HTTP response (status, headers and body, e.g. 451) when the server offers
      the ``websocket.http.response`` extension (uvicorn, hypercorn, Starlette's
      test client), else as ``websocket.close`` with code 1008, which servers
      turn into a 403 handshake response; the close reason is the reason code.
    * An HTTP request's audit line is written once the reply is sent or the
      application has returned (also when it raised), so logging does not delay
      the response; ``ts`` still records when the decision was made. A
      websocket's line is written at the handshake.

    Args:
        app: The ASGI application.
        geofence: The engine (the default one when ``route_policies`` is set).
        config: Settings; alternatively pass the options as keywords.
        **options: :class:`~geofence.integrations.config.GeofenceOptions`.

    Raises:
        ValueError: An option is invalid, or both ``config`` and options are given.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        geofence: Geofence,
        config: GeofenceConfig | None = None,
        **options: Unpack[GeofenceOptions],
    ) -> None:
        self.app = app
        self.config = resolve_config(config, options)
        self.gate = Gate(geofence, self.config, integration="asgi")
        self._route_name = self.config.route_header.lower().encode("latin-1")
        self._audit = self.config.audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        kind = scope["type"]
        if kind not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        gate = self.gate
        client = scope.get("client")
        headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
        method = scope.get("method", "GET")
        path = scope.get("path", "/")
        # An HTTP request's audit line is written after the response (finally
        # below); whether the logger takes it at all is asked there, once.
        later = kind == "http" and self._audit is not None
        at = _now() if later else None
        peer = client[0] if client else None
        # Most requests are decided by their client address alone, without a coroutine.
        verdict = gate.fast_check(
            kind=kind, method=method, path=path, peer=peer, headers=headers, defer_audit=later
        )
        if verdict is None:  # hooks, contexts, evidence: the general path
            verdict = await gate.acheck(
                kind=kind,
                method=method,
                path=path,
                peer=peer,
                headers=headers,
                native=scope,
                defer_audit=later,
            )
        try:
            # Act on the verdict (inline: one coroutine fewer per request).
            route = verdict.route
            name = self._route_name
            rewrite = route is not None or _has_header(headers, name)
            state = scope.get("state")
            if rewrite or state is None:
                # A copy of the scope before changing its keys (ASGI); the state
                # dict is the server's per-request copy and is shared on purpose,
                # as Starlette does, so filling it in needs no copy.
                scope = dict(scope)
                if state is None:
                    state = scope["state"] = {}
                if rewrite:
                    kept = [(key, value) for key, value in headers if key.lower() != name]
                    if route is not None:
                        kept.append((name, route.encode("latin-1")))
                    scope["headers"] = kept
            state["geofence"] = verdict.decision
            state["geofence_route"] = route

            reply = verdict.reply
            if reply is not None:
                if kind == "http":
                    await _send_reply(send, reply)
                else:
                    await _refuse_websocket(scope, send, reply, verdict)
                return
            extra = verdict.response_headers
            if not extra or kind != "http":
                await self.app(scope, receive, send)
                return
            await self.app(scope, receive, _adding_headers(send, extra))
        finally:
            if later:
                gate.record(verdict, kind=kind, method=method, path=path, at=at)


def _adding_headers(send: Send, extra: tuple[tuple[str, str], ...]) -> Send:
    """Wrap ``send`` to add response headers (decision and route headers)."""
    encoded = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra]

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = [*message.get("headers", ()), *encoded]
        await send(message)

    return send_with_headers


def _has_header(headers: list[tuple[bytes, bytes]], name: bytes) -> bool:
    """Whether a header (lower-case ``name``) is present; a loop, cheaper than any() here."""
    for key, _ in headers:  # noqa: SIM110 - measured faster than any() with a generator
        if key.lower() == name:
            return True
    return False


def _raw_headers(reply: Reply) -> list[tuple[bytes, bytes]]:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    headers.append((b"content-length", str(len(reply.body)).encode()))
    return headers


async def _send_reply(send: Send, reply: Reply) -> None:
    start = {"type": "http.response.start", "status": reply.status, "headers": _raw_headers(reply)}
    await send(start)
    await send({"type": "http.response.body", "body": reply.body})


async def _refuse_websocket(scope: Scope, send: Send, reply: Reply, verdict: Verdict) -> None:
    """Refuse a handshake: an HTTP denial response if the server supports it, else close."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": reply.status,
                "headers": _raw_headers(reply),
            }
        )
        await send({"type": "websocket.http.response.body", "body": reply.body})
        return
    decision = verdict.decision
    reason = decision.reasons[0] if decision is not None and decision.reasons else "refused"
    # A close reason is at most 123 bytes of UTF-8 (RFC 6455 §5.5: 125 minus the code).
    await send(
        {
            "type": "websocket.close",
            "code": WS_POLICY_VIOLATION,
            "reason": reason.encode()[:123].decode("utf-8", "ignore"),
        }
    )
