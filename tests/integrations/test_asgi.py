"""Tests of the pure ASGI middleware with Starlette's TestClient and httpx's ASGITransport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from geofence.context import Subject
from geofence.decision import Action, Decision
from geofence.engine import Geofence
from geofence.integrations import GeofenceMiddleware
from geofence.integrations.asgi import Message, Receive, Scope, Send
from geofence.integrations.common import PrometheusMetrics, Reply, RequestInfo
from geofence.policy import parse_policy
from geofence.snapshot.reader import Snapshot
from tests.integrations.conftest import ADDR, POLICY, RecordingProvider

BLOCKED_BY = "https://example.com/legal/geo"


async def echo(request: Request) -> JSONResponse:
    decision: Decision | None = request.state.geofence
    return JSONResponse(
        {
            "action": decision.action.value if decision is not None else None,
            "degraded": decision.degraded if decision is not None else None,
            "route": request.state.geofence_route,
            "route_header": request.headers.get("x-geofence-route"),
            "lifespan": getattr(request.state, "started", None),
        }
    )


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    decision: Decision = websocket.state.geofence
    await websocket.send_json(
        {
            "action": decision.action.value,
            "route_header": websocket.headers.get("x-geofence-route"),
        }
    )
    await websocket.close()


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"started": True}


def make_app(engine: Geofence, **options: Any) -> Starlette:
    options.setdefault("blocked_by", BLOCKED_BY)
    return Starlette(
        routes=[
            Route("/{path:path}", echo),
            WebSocketRoute("/ws", ws_echo),
        ],
        middleware=[Middleware(GeofenceMiddleware, geofence=engine, **options)],
        lifespan=lifespan,
    )


def client_for(app: Any, ip: str = ADDR["allow"], **kw: Any) -> TestClient:
    return TestClient(app, client=(ip, 50000), follow_redirects=False, **kw)


# -- actions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "status", "action", "route"),
    [
        ("allow", 200, "allow", None),
        ("review", 200, "review", None),
        ("route", 200, "route", "eu-tier"),
        ("shadow", 200, "allow", None),
        ("allow6", 200, "allow", None),
        ("route6", 200, "route", "eu-tier"),
    ],
)
def test_passing_actions_reach_the_app(
    engine: Geofence, key: str, status: int, action: str, route: str | None
) -> None:
    """allow, review (flagged), route and shadow reach the app with the decision in state."""
    response = client_for(make_app(engine), ADDR[key]).get("/anything")
    assert response.status_code == status
    body = response.json()
    assert body["action"] == action
    assert body["route"] == route
    assert body["route_header"] == route


@pytest.mark.parametrize("key", ["deny", "deny6"])
def test_deny_is_451_with_link_and_reason_only(engine: Geofence, key: str) -> None:
    """Deny -> 451, Link rel=blocked-by, not cacheable, body = error + reason code only."""
    response = client_for(make_app(engine), ADDR[key]).get("/v1/models?x=1")
    assert response.status_code == 451
    assert response.headers["link"] == f'<{BLOCKED_BY}>; rel="blocked-by"'
    assert response.headers["cache-control"] == "no-store"
    detail = response.json()["detail"]
    assert detail["error"] == "unavailable_for_legal_reasons"
    assert detail["reason"] == "rule:deny-cu"
    assert detail["rule"] == "deny-cu"
    assert detail["blocked_by"] == BLOCKED_BY
    assert ADDR[key] not in response.text
    assert '"CU"' not in response.text


def test_deny_plain_body_and_no_link_by_default(engine: Geofence) -> None:
    """body_format=plain gives text; without blocked_by there is no Link header."""
    app = make_app(engine, body_format="plain", blocked_by=None)
    response = client_for(app, ADDR["deny"]).get("/")
    assert response.status_code == 451
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == (
        "This service is not available at your location for legal reasons. (reason: rule:deny-cu)\n"
    )
    assert "link" not in response.headers


def test_challenge_default_is_403_with_a_machine_readable_body(engine: Geofence) -> None:
    """Challenge without hook or redirect -> 403 challenge_required (not 401: SDKs rotate keys)."""
    response = client_for(make_app(engine, challenge_type="kyc"), ADDR["challenge"]).get("/")
    assert response.status_code == 403
    assert "www-authenticate" not in response.headers
    detail = response.json()["detail"]
    assert detail["error"] == "challenge_required"
    assert detail["challenge"] == "kyc"
    assert detail["reason"] == "rule:challenge-fr"


def test_challenge_status_is_configurable(engine: Geofence) -> None:
    """challenge_status=401 restores WWW-Authenticate; 428 is sent as is."""
    app = make_app(engine, challenge_type="kyc", challenge_status=401)
    response = client_for(app, ADDR["challenge"]).get("/")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Geofence challenge="kyc"'
    app = make_app(engine, challenge_status=428, challenge_url="https://example.com/verify")
    response = client_for(app, ADDR["challenge"]).get("/")
    assert response.status_code == 428
    assert response.json()["detail"]["verify"] == "https://example.com/verify"


def test_challenge_redirect(engine: Geofence) -> None:
    """challenge_redirect -> 303 See Other to the verification page."""
    app = make_app(engine, challenge_redirect="/verify")
    response = client_for(app, ADDR["challenge"]).get("/")
    assert response.status_code == 303
    assert response.headers["location"] == "/verify"


def test_challenge_hook(engine: Geofence) -> None:
    """A hook answers challenges; returning None lets verified subjects through."""

    def hook(info: RequestInfo, decision: Decision) -> Reply | None:
        if info.headers.get("authorization") == "Bearer verified":
            return None
        assert isinstance(info.native, dict)  # the ASGI scope
        return Reply.json(403, {"verify": "/kyc", "rule": decision.rule_id})

    client = client_for(make_app(engine, challenge=hook), ADDR["challenge"])
    refused = client.get("/")
    assert refused.status_code == 403
    assert refused.json() == {"verify": "/kyc", "rule": "challenge-fr"}
    served = client.get("/", headers={"Authorization": "Bearer verified"})
    assert served.status_code == 200
    assert served.json()["action"] == "challenge"


# -- route header ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["allow", "route"])
def test_client_supplied_route_header_is_replaced(engine: Geofence, key: str) -> None:
    """A client cannot choose its route: its X-Geofence-Route is always removed."""
    client = client_for(make_app(engine), ADDR[key])
    body = client.get("/", headers={"X-Geofence-Route": "us-premium"}).json()
    assert body["route_header"] == ("eu-tier" if key == "route" else None)


def test_route_header_name_and_response_headers(engine: Geofence) -> None:
    """A custom route header name; route and decision headers on responses when enabled."""
    app = make_app(
        engine,
        route_header="X-Upstream",
        route_response_header=True,
        decision_header="X-Geofence-Decision",
    )
    client = client_for(app, ADDR["route"])
    response = client.get("/")
    assert response.headers["x-upstream"] == "eu-tier"
    assert response.headers["x-geofence-decision"] == "route"
    denied = client_for(app, ADDR["deny"]).get("/")
    assert denied.headers["x-geofence-decision"] == "deny"
    assert "x-upstream" not in denied.headers


# -- client address ----------------------------------------------------------------------------


def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored(engine: Geofence) -> None:
    """Without trusted proxies the peer decides, whatever X-Forwarded-For says."""
    denied = client_for(make_app(engine), ADDR["deny"])
    assert denied.get("/", headers={"X-Forwarded-For": ADDR["allow"]}).status_code == 451
    allowed = client_for(make_app(engine), ADDR["allow"])
    assert allowed.get("/", headers={"X-Forwarded-For": ADDR["deny"]}).status_code == 200


def test_trusted_proxy_forwarded_for(engine: Geofence) -> None:
    """Behind a trusted proxy the right-most untrusted X-Forwarded-For hop is the client."""
    app = make_app(engine, trusted_proxies=["10.0.0.0/8"])
    proxy = client_for(app, "10.0.0.7")
    assert proxy.get("/", headers={"X-Forwarded-For": ADDR["deny"]}).status_code == 451
    # The client wrote its own X-Forwarded-For; the proxy appended the real address.
    spoof = {"X-Forwarded-For": f"{ADDR['allow']}, {ADDR['deny']}"}
    assert proxy.get("/", headers=spoof).status_code == 451
    honest = {"X-Forwarded-For": f"{ADDR['deny']}, {ADDR['allow']}"}
    assert proxy.get("/", headers=honest).status_code == 200
    ipv6 = {"X-Forwarded-For": ADDR["route6"]}
    assert proxy.get("/", headers=ipv6).json()["route"] == "eu-tier"
    # Off: a proxy outside the trusted networks is the client itself (reserved: allowed).
    direct = client_for(make_app(engine), "10.0.0.7")
    assert direct.get("/", headers={"X-Forwarded-For": ADDR["deny"]}).status_code == 200


def test_ipv6_and_mapped_peers(engine: Geofence) -> None:
    """IPv6 peers are decided on their own; IPv4-mapped peers as their IPv4 address."""
    assert client_for(make_app(engine), "2a00:1::5").get("/").status_code == 451
    assert client_for(make_app(engine), "::ffff:2.2.2.2").get("/").status_code == 451
    assert client_for(make_app(engine), "2600:0:0::9").get("/").status_code == 200


# -- exempt paths and per-route policies -------------------------------------------------------


def test_exempt_paths(engine: Geofence) -> None:
    """Exempt paths are served without a decision, even to denied clients."""
    app = make_app(engine, exempt_paths=["/healthz"], exempt_prefixes=["/static"])
    client = client_for(app, ADDR["deny"])
    health = client.get("/healthz", headers={"X-Geofence-Route": "spoof"})
    assert health.status_code == 200
    assert health.json()["action"] is None
    assert health.json()["route_header"] is None
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/staticfiles").status_code == 451
    assert client.get("/healthz/extra").status_code == 200  # a prefix at a segment boundary
    assert client.get("/healthzx").status_code == 451


def test_route_policies(engine: Geofence, strict_engine: Geofence) -> None:
    """A stricter engine for a path prefix; the default engine elsewhere."""
    app = make_app(engine, route_policies={"/v1/frontier": strict_engine})
    client = client_for(app, ADDR["allow"])
    assert client.get("/v1/frontier/generate").status_code == 451
    assert client.get("/v1/frontier").status_code == 451
    assert client.get("/v1/basic").status_code == 200


# -- fail modes --------------------------------------------------------------------------------


def test_fail_closed_and_open(engine: Geofence) -> None:
    """'testclient' is no IP address: closed refuses with a reason; open serves flagged."""
    closed = TestClient(make_app(engine)).get("/")
    assert closed.status_code == 451
    assert closed.json()["detail"]["reason"] == "client_address_unavailable"
    opened = TestClient(make_app(engine, fail_mode="open")).get("/")
    assert opened.status_code == 200
    assert opened.json()["action"] == "review"
    assert opened.json()["degraded"] is True


# -- websockets --------------------------------------------------------------------------------


def test_websocket_allowed_and_routed(engine: Geofence) -> None:
    """Handshakes are decided; allowed ones see the decision and the route header."""
    with client_for(make_app(engine), ADDR["allow"]).websocket_connect("/ws") as ws:
        assert ws.receive_json() == {"action": "allow", "route_header": None}
    with client_for(make_app(engine), ADDR["route"]).websocket_connect("/ws") as ws:
        assert ws.receive_json() == {"action": "route", "route_header": "eu-tier"}


def test_websocket_denied_with_http_response_extension(engine: Geofence) -> None:
    """With websocket.http.response the refusal is a real 451 with Link and reason."""
    client = client_for(make_app(engine), ADDR["deny"])
    with pytest.raises(WebSocketDenialResponse) as info, client.websocket_connect("/ws"):
        pass  # pragma: no cover - the handshake is refused
    response = info.value
    assert response.status_code == 451
    assert response.headers["link"] == f'<{BLOCKED_BY}>; rel="blocked-by"'
    assert json.loads(response.content)["detail"]["reason"] == "rule:deny-cu"


def test_websocket_denied_without_extension_closes_1008(engine: Geofence) -> None:
    """Without the extension the handshake is closed with 1008 and the reason code."""
    inner = make_app(engine)

    async def no_extension(scope: Scope, receive: Receive, send: Send) -> None:
        scope = {**scope, "extensions": {}}
        await inner(scope, receive, send)

    client = client_for(no_extension, ADDR["deny"])
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/ws"):
        pass  # pragma: no cover - the handshake is refused
    assert info.value.code == 1008
    assert info.value.reason == "rule:deny-cu"
    client = client_for(no_extension, ADDR["challenge"])
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/ws"):
        pass  # pragma: no cover - the handshake is refused
    assert info.value.reason == "rule:challenge-fr"


# -- lifespan and other scopes -----------------------------------------------------------------


def test_lifespan_passes_through(engine: Geofence) -> None:
    """Lifespan scopes reach the app untouched; its state reaches requests."""
    seen: list[tuple[str, object]] = []

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope["type"], scope.get("state")))
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].removesuffix(".startup").removesuffix(".shutdown")
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown" or kind != "lifespan":
                    return
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    app = GeofenceMiddleware(raw, geofence=engine)
    with client_for(app) as client:
        assert client.get("/").status_code == 204
    assert seen[0][0] == "lifespan"
    assert seen[0][1] is None or "geofence" not in seen[0][1]  # type: ignore[operator]
    assert seen[1][0] == "http"
    assert isinstance(seen[1][1], dict)
    assert seen[1][1]["geofence"].action is Action.ALLOW

    with client_for(make_app(engine)) as client:
        assert client.get("/").json()["lifespan"] is True


async def test_unknown_scope_types_pass_through(engine: Geofence) -> None:
    """A scope type the middleware does not know is handed on as is."""
    calls: list[Scope] = []

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope)

    async def receive() -> Message:
        return {"type": "x"}

    async def send(message: Message) -> None:
        return None

    scope: Scope = {"type": "custom.protocol"}
    await GeofenceMiddleware(raw, geofence=engine)(scope, receive, send)
    assert calls == [scope]
    assert calls[0] is scope


# -- httpx ASGITransport -----------------------------------------------------------------------


async def test_httpx_asgi_transport(engine: Geofence) -> None:
    """The middleware works under httpx's ASGITransport (asyncio)."""
    app = make_app(engine)
    for key, status in (("deny", 451), ("allow", 200), ("deny6", 451)):
        transport = httpx.ASGITransport(app=app, client=(ADDR[key], 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/")
            assert response.status_code == status


# -- audit and metrics -------------------------------------------------------------------------


def test_audit_lines_are_json(engine: Geofence, audit_caplog: Any) -> None:
    """Deny, review, route and shadow each write one JSON line; plain allows none."""
    app = make_app(engine)
    for key in ("deny", "review", "route", "shadow", "allow"):
        client_for(app, ADDR[key]).get("/v1/chat?api_key=secret")
    lines = [json.loads(r.getMessage()) for r in audit_caplog.records if r.name == "geofence.audit"]
    assert [line["event"] for line in lines] == ["deny", "review", "route", "shadow"]
    assert all(line["path"] == "/v1/chat" for line in lines)
    assert all("secret" not in json.dumps(line) for line in lines)
    assert lines[0]["status"] == 451
    assert lines[1]["status"] is None
    assert lines[2]["route"] == "eu-tier"
    assert lines[3]["shadow_action"] == "deny"
    assert lines[3]["shadow_rule_id"] == "shadow-it"
    assert all(line["integration"] == "asgi" for line in lines)


def test_prometheus_counters_increment(engine: Geofence) -> None:
    """Counters by action and reason, through the middleware."""
    registry = CollectorRegistry()
    app = make_app(engine, metrics=PrometheusMetrics(registry=registry))
    for key in ("deny", "deny", "route"):
        client_for(app, ADDR[key]).get("/")
    value = registry.get_sample_value
    assert value("geofence_decisions_total", {"action": "deny", "reason": "rule:deny-cu"}) == 2
    assert value("geofence_decisions_total", {"action": "route", "reason": "rule:route-de"}) == 1


def test_config_or_options_not_both(engine: Geofence) -> None:
    """Passing a config and options together is refused."""
    from geofence.integrations.common import GeofenceConfig

    with pytest.raises(ValueError, match="either"):
        GeofenceMiddleware(echo, geofence=engine, config=GeofenceConfig(), fail_mode="open")  # type: ignore[arg-type]


# -- async engine path -------------------------------------------------------------------------


def test_context_decisions_use_adecide(snapshot: Snapshot) -> None:
    """With a context, the ASGI middleware awaits Geofence.adecide (asyncio stores)."""
    provider = RecordingProvider()
    engine = Geofence(snapshot, parse_policy(POLICY), signals=provider)
    app = make_app(engine, subject=lambda info: Subject(id="user-1"))
    assert client_for(app, ADDR["route"]).get("/").json()["action"] == "route"
    assert provider.calls == ["async"]
    no_context = make_app(engine)
    assert client_for(no_context, ADDR["route"]).get("/").status_code == 200
    assert provider.calls == ["async"]  # no context: the precomputed table, no provider


# -- audit lines after the response -----------------------------------------------------------


def _bare_middleware(engine: Geofence, inner: Any, logger_name: str) -> GeofenceMiddleware:
    from geofence.integrations.common import AuditLogger

    return GeofenceMiddleware(inner, geofence=engine, audit=AuditLogger(logger_name))


def _http_scope(ip: str) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": "/v1",
        "headers": [(b"host", b"test")],
        "client": (ip, 1234),
        "state": {},
    }


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def test_http_audit_line_is_written_after_the_response(
    engine: Geofence, audit_caplog: Any
) -> None:
    """The line is not yet written while the app runs; it is written once it returns.

    Its ``ts`` is the decision time (before the app ran), not the time of writing.
    """
    import time

    seen_during: list[int] = []
    sent: list[Message] = []
    moments: dict[str, float] = {}

    def lines() -> list[dict[str, Any]]:
        return [
            json.loads(r.getMessage()) for r in audit_caplog.records if r.name == "geofence.audit"
        ]

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen_during.append(len(lines()))
        moments["app"] = time.time()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = _bare_middleware(engine, inner, "geofence.audit")
    before = time.time()
    await middleware(_http_scope(ADDR["route"]), _receive, send)
    assert seen_during == [0]  # nothing logged while the application ran
    written = lines()
    assert [line["event"] for line in written] == ["route"]
    assert before - 0.002 <= written[0]["ts"] <= moments["app"] + 0.002
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


async def test_http_audit_line_is_written_when_the_app_raises(
    engine: Geofence, audit_caplog: Any
) -> None:
    """An application error still leaves the audit line (written in a finally)."""

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    async def send(message: Message) -> None:
        return None

    middleware = _bare_middleware(engine, inner, "geofence.audit")
    with pytest.raises(RuntimeError):
        await middleware(_http_scope(ADDR["review"]), _receive, send)
    events = [
        json.loads(r.getMessage())["event"]
        for r in audit_caplog.records
        if r.name == "geofence.audit"
    ]
    assert events == ["review"]


async def test_refusals_are_audited_after_the_reply(engine: Geofence, audit_caplog: Any) -> None:
    """A 451 is sent first, then its line (status 451) is written."""
    order: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover
        raise AssertionError("a denied request never reaches the application")

    async def send(message: Message) -> None:
        order.append(f"{message['type']}:{len(audit_caplog.records)}")

    middleware = _bare_middleware(engine, inner, "geofence.audit")
    await middleware(_http_scope(ADDR["deny"]), _receive, send)
    assert order == ["http.response.start:0", "http.response.body:0"]
    lines = [json.loads(r.getMessage()) for r in audit_caplog.records]
    assert [(line["event"], line["status"]) for line in lines] == [("deny", 451)]


async def test_scope_is_only_copied_when_its_keys_change(engine: Geofence) -> None:
    """The server's state dict is filled in place; a route header needs a new scope."""
    scopes: list[Scope] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)

    async def send(message: Message) -> None:
        return None

    middleware = GeofenceMiddleware(inner, geofence=engine)
    allow, route, bare = (
        _http_scope(ADDR["allow"]),
        _http_scope(ADDR["route"]),
        _http_scope(ADDR["allow"]),
    )
    del bare["state"]
    for scope in (allow, route, bare):
        await middleware(scope, _receive, send)
    assert scopes[0] is allow
    assert allow["state"]["geofence"].action is Action.ALLOW
    assert scopes[1] is not route
    assert route["headers"] == [(b"host", b"test")]
    assert (b"x-geofence-route", b"eu-tier") in scopes[1]["headers"]
    assert route["state"]["geofence_route"] == "eu-tier"  # the shared state dict
    assert scopes[2] is not bare
    assert "state" not in bare
    assert scopes[2]["state"]["geofence"].action is Action.ALLOW


async def test_no_audit_work_while_the_logger_is_off(
    engine: Geofence, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the audit logger above INFO, no record is made; turning it on takes effect at once."""
    import logging

    from geofence.integrations import audit as audit_module
    from geofence.integrations.audit import AuditLogger

    calls: list[str] = []
    original = audit_module.make_record

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        calls.append("record")
        return original(*args, **kwargs)

    monkeypatch.setattr(audit_module, "make_record", counting)
    logger = logging.getLogger("geofence.test.audit-switch")
    logger.setLevel(logging.WARNING)
    audit = AuditLogger(logger)
    assert audit.enabled is False

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    async def send(message: Message) -> None:
        return None

    middleware = GeofenceMiddleware(inner, geofence=engine, audit=audit)
    await middleware(_http_scope(ADDR["route"]), _receive, send)
    assert calls == []
    logger.setLevel(logging.INFO)
    assert audit.enabled is True
    await middleware(_http_scope(ADDR["route"]), _receive, send)
    assert audit_module.flush_audit_queue()  # records are made by the listener thread
    assert calls == ["record"]
