"""Tests with FastAPI: the ASGI middleware on an app and the per-route dependency.

No ``from __future__ import annotations`` here: FastAPI resolves route
annotations at runtime, and the dependencies are local to ``make_app``.
"""

from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from geofence.decision import Decision
from geofence.engine import Geofence
from geofence.integrations.asgi import GeofenceMiddleware
from geofence.integrations.common import GeofenceConfig
from geofence.integrations.fastapi import GeofenceDependency
from tests.integrations.conftest import ADDR


def client_for(app: FastAPI, ip: str) -> TestClient:
    return TestClient(app, client=(ip, 40000), follow_redirects=False)


def test_middleware_on_fastapi_app(engine: Geofence) -> None:
    """add_middleware works; request.state.geofence holds the decision."""
    app = FastAPI()
    app.add_middleware(GeofenceMiddleware, geofence=engine, exempt_paths=["/healthz"])

    @app.get("/v1/models")
    def models(request: Request) -> dict[str, Any]:
        decision: Decision = request.state.geofence
        return {"action": decision.action.value, "route": request.state.geofence_route}

    @app.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    assert client_for(app, ADDR["route"]).get("/v1/models").json() == {
        "action": "route",
        "route": "eu-tier",
    }
    assert client_for(app, ADDR["deny"]).get("/v1/models").status_code == 451
    assert client_for(app, ADDR["deny"]).get("/healthz").status_code == 200


def make_app(engine: Geofence, **options: Any) -> FastAPI:
    app = FastAPI()
    geofenced = GeofenceDependency(engine, blocked_by="https://example.com/geo", **options)

    @app.get("/open")
    def open_route() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/restricted")
    def restricted(
        request: Request, decision: Annotated[Decision | None, Depends(geofenced)]
    ) -> dict[str, Any]:
        assert decision is request.state.geofence
        return {
            "action": decision.action.value if decision else None,
            "route": request.state.geofence_route,
        }

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, decision: Annotated[Decision, Depends(geofenced)]) -> None:
        await websocket.accept()
        await websocket.send_json({"action": decision.action.value})
        await websocket.close()

    return app


@pytest.mark.parametrize(
    ("key", "action", "route"),
    [("allow", "allow", None), ("review", "review", None), ("route", "route", "eu-tier")],
)
def test_dependency_passes(engine: Geofence, key: str, action: str, route: str | None) -> None:
    """The dependency returns the decision and sets request.state for passing actions."""
    response = client_for(make_app(engine), ADDR[key]).get("/restricted")
    assert response.status_code == 200
    assert response.json() == {"action": action, "route": route}


@pytest.mark.parametrize("key", ["deny", "deny6"])
def test_dependency_deny_raises_451(engine: Geofence, key: str) -> None:
    """Deny -> HTTPException(451) with Link rel=blocked-by; other routes are unaffected."""
    client = client_for(make_app(engine), ADDR[key])
    response = client.get("/restricted")
    assert response.status_code == 451
    assert response.headers["link"] == '<https://example.com/geo>; rel="blocked-by"'
    assert response.headers["cache-control"] == "no-store"
    detail = response.json()["detail"]
    assert detail["error"] == "unavailable_for_legal_reasons"
    assert detail["reason"] == "rule:deny-cu"
    assert client.get("/open").status_code == 200


def test_dependency_challenge_variants(engine: Geofence) -> None:
    """Challenge -> 403 challenge_required, or a 303 redirect."""
    challenged = client_for(make_app(engine), ADDR["challenge"]).get("/restricted")
    assert challenged.status_code == 403
    assert challenged.json()["detail"]["error"] == "challenge_required"
    redirect = client_for(make_app(engine, challenge_redirect="/verify"), ADDR["challenge"])
    response = redirect.get("/restricted")
    assert response.status_code == 303
    assert response.headers["location"] == "/verify"


def test_dependency_plain_body(engine: Geofence) -> None:
    """body_format=plain gives a text detail."""
    response = client_for(make_app(engine, body_format="plain"), ADDR["deny"]).get("/restricted")
    assert response.json() == {
        "detail": "This service is not available at your location for legal reasons. "
        "(reason: rule:deny-cu)\nMore: https://example.com/geo\n"
    }


def test_dependency_exempt_path(engine: Geofence) -> None:
    """On an exempt path the dependency returns None."""
    app = make_app(engine, exempt_paths=["/restricted"])
    assert client_for(app, ADDR["deny"]).get("/restricted").json() == {
        "action": None,
        "route": None,
    }


def test_dependency_on_websocket(engine: Geofence) -> None:
    """On websocket routes a refusal closes the handshake with 1008."""
    with client_for(make_app(engine), ADDR["allow"]).websocket_connect("/ws") as ws:
        assert ws.receive_json() == {"action": "allow"}
    client = client_for(make_app(engine), ADDR["deny"])
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/ws"):
        pass  # pragma: no cover - the handshake is refused
    assert info.value.code == 1008
    assert info.value.reason == "rule:deny-cu"


def test_dependency_trusted_proxies(engine: Geofence) -> None:
    """The dependency resolves clients through trusted proxies like the middleware."""
    app = make_app(engine, trusted_proxies="10.0.0.0/8")
    client = client_for(app, "10.1.1.1")
    assert client.get("/restricted", headers={"X-Forwarded-For": ADDR["deny"]}).status_code == 451
    untrusted = client_for(make_app(engine), ADDR["allow"])
    spoof = {"X-Forwarded-For": ADDR["deny"]}
    assert untrusted.get("/restricted", headers=spoof).status_code == 200


def test_dependency_config_or_options(engine: Geofence) -> None:
    """A ready config is accepted; config plus options is refused."""
    assert GeofenceDependency(engine, config=GeofenceConfig()).config.fail_mode == "closed"
    with pytest.raises(ValueError, match="either"):
        GeofenceDependency(engine, config=GeofenceConfig(), fail_mode="open")
