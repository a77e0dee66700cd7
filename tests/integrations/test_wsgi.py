"""Tests of the WSGI middleware with Flask's test client (and a bare WSGI app)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest
from flask import Flask, request
from prometheus_client import CollectorRegistry
from werkzeug.test import Client

from geofence.context import Subject
from geofence.engine import Geofence
from geofence.integrations.common import PrometheusMetrics
from geofence.integrations.flask import Geofence as FlaskGeofence
from geofence.integrations.flask import current_decision, current_route
from geofence.integrations.wsgi import (
    DECISION_KEY,
    ROUTE_KEY,
    Environ,
    GeofenceWSGIMiddleware,
    StartResponse,
    environ_headers,
)
from geofence.policy import parse_policy
from geofence.snapshot.reader import Snapshot
from tests.integrations.conftest import ADDR, POLICY, RecordingProvider


def make_app(engine: Geofence, **options: Any) -> Flask:
    app = Flask(__name__)
    options.setdefault("blocked_by", "https://example.com/geo")
    FlaskGeofence(app, geofence=engine, **options)

    @app.route("/", defaults={"path": ""})
    @app.route("/<path:path>")
    def echo(path: str) -> dict[str, Any]:
        decision = current_decision()
        return {
            "action": decision.action.value if decision else None,
            "degraded": decision.degraded if decision else None,
            "route": current_route(),
            "route_env": request.environ.get(ROUTE_KEY),
            "route_header": request.headers.get("X-Geofence-Route"),
        }

    return app


def get(app: Flask, ip: str, path: str = "/", **kw: Any) -> Any:
    return app.test_client().get(path, environ_base={"REMOTE_ADDR": ip}, **kw)


@pytest.mark.parametrize(
    ("key", "action", "route"),
    [
        ("allow", "allow", None),
        ("review", "review", None),
        ("route", "route", "eu-tier"),
        ("shadow", "allow", None),
        ("allow6", "allow", None),
        ("route6", "route", "eu-tier"),
    ],
)
def test_passing_actions(engine: Geofence, key: str, action: str, route: str | None) -> None:
    """allow, review, route and shadow reach the view with the decision in the environ."""
    response = get(make_app(engine), ADDR[key])
    assert response.status_code == 200
    assert response.json == {
        "action": action,
        "degraded": False,
        "route": route,
        "route_env": route,
        "route_header": route,
    }


@pytest.mark.parametrize("key", ["deny", "deny6"])
def test_deny_is_451(engine: Geofence, key: str) -> None:
    """Deny -> 451 Unavailable For Legal Reasons with Link and the reason code only."""
    response = get(make_app(engine), ADDR[key])
    assert response.status == "451 Unavailable For Legal Reasons"
    assert response.headers["Link"] == '<https://example.com/geo>; rel="blocked-by"'
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json["detail"]["error"] == "unavailable_for_legal_reasons"
    assert response.json["detail"]["reason"] == "rule:deny-cu"


def test_challenge_variants(engine: Geofence) -> None:
    """Challenge -> 403 challenge_required, or 303 to the redirect URL."""
    response = get(make_app(engine), ADDR["challenge"])
    assert response.status_code == 403
    assert response.json["detail"]["error"] == "challenge_required"
    redirected = get(make_app(engine, challenge_redirect="/verify"), ADDR["challenge"])
    assert redirected.status_code == 303
    assert redirected.headers["Location"] == "/verify"


def test_spoofed_route_header_is_removed(engine: Geofence) -> None:
    """A client-sent X-Geofence-Route never reaches the app, on any action."""
    spoof = {"X-Geofence-Route": "us-premium"}
    assert get(make_app(engine), ADDR["allow"], headers=spoof).json["route_header"] is None
    assert get(make_app(engine), ADDR["route"], headers=spoof).json["route_header"] == "eu-tier"


def test_trusted_proxies_on_and_off(engine: Geofence) -> None:
    """X-Forwarded-For counts only from a trusted peer; spoofing from others is ignored."""
    trusted = make_app(engine, trusted_proxies=["192.168.0.0/16"])
    headers = {"X-Forwarded-For": ADDR["deny"]}
    assert get(trusted, "192.168.1.10", headers=headers).status_code == 451
    chain = {"X-Forwarded-For": f"{ADDR['allow']}, {ADDR['route6']}"}
    assert get(trusted, "192.168.1.10", headers=chain).json["route"] == "eu-tier"
    untrusted = make_app(engine)
    assert get(untrusted, ADDR["allow"], headers=headers).status_code == 200
    assert (
        get(untrusted, ADDR["deny"], headers={"X-Forwarded-For": ADDR["allow"]}).status_code == 451
    )


def test_exempt_and_route_policies(engine: Geofence, strict_engine: Geofence) -> None:
    """Exempt paths skip decisions; per-route policies pick a stricter engine."""
    app = make_app(
        engine, exempt_paths=["/healthz"], route_policies={"/v1/frontier": strict_engine}
    )
    assert get(app, ADDR["deny"], "/healthz").json["action"] is None
    assert get(app, ADDR["allow"], "/v1/frontier/x").status_code == 451
    assert get(app, ADDR["allow"], "/v1/basic").status_code == 200


def test_fail_closed_and_open(engine: Geofence) -> None:
    """An unusable REMOTE_ADDR: closed -> 451 with the reason; open -> served, review."""
    closed = get(make_app(engine), "")
    assert closed.status_code == 451
    assert closed.json["detail"]["reason"] == "client_address_unavailable"
    opened = get(make_app(engine, fail_mode="open"), "unix:/run/app.sock")
    assert opened.status_code == 200
    assert opened.json["action"] == "review"
    assert opened.json["degraded"] is True


def test_response_headers(engine: Geofence) -> None:
    """decision_header and route_response_header add response headers."""
    app = make_app(engine, decision_header="X-Geofence-Decision", route_response_header=True)
    response = get(app, ADDR["route"])
    assert response.headers["X-Geofence-Decision"] == "route"
    assert response.headers["X-Geofence-Route"] == "eu-tier"


def test_audit_and_metrics(engine: Geofence, audit_caplog: Any) -> None:
    """Audit lines are JSON; counters increment."""
    registry = CollectorRegistry()
    app = make_app(engine, metrics=PrometheusMetrics(registry=registry))
    get(app, ADDR["deny"], "/v1/x")
    get(app, ADDR["allow"], "/v1/x")
    lines = [json.loads(r.getMessage()) for r in audit_caplog.records if r.name == "geofence.audit"]
    assert len(lines) == 1
    assert lines[0]["integration"] == "flask"
    assert lines[0]["status"] == 451
    labels = {"action": "deny", "reason": "rule:deny-cu"}
    assert registry.get_sample_value("geofence_decisions_total", labels) == 1


def test_init_app_twice_is_refused(engine: Geofence) -> None:
    """Installing the middleware twice on one app is an error."""
    app = make_app(engine)
    assert isinstance(app.extensions["geofence"], GeofenceWSGIMiddleware)
    with pytest.raises(RuntimeError, match="already"):
        FlaskGeofence(geofence=engine).init_app(app)


def test_bare_wsgi_app(engine: Geofence) -> None:
    """Without Flask: the environ carries the decision and the route header."""
    seen: list[Environ] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = GeofenceWSGIMiddleware(app, geofence=engine)
    client = Client(wrapped)
    response = client.get("/", environ_base={"REMOTE_ADDR": ADDR["route"]})
    assert response.status_code == 200
    assert seen[0][DECISION_KEY].route == "eu-tier"
    assert seen[0]["HTTP_X_GEOFENCE_ROUTE"] == "eu-tier"
    denied = client.get("/", environ_base={"REMOTE_ADDR": ADDR["deny"]})
    assert denied.status_code == 451
    assert len(seen) == 1


def test_environ_headers() -> None:
    """WSGI environ keys become lower-case header names."""
    environ = {"HTTP_X_FORWARDED_FOR": "1.2.3.4", "CONTENT_TYPE": "a/b", "PATH_INFO": "/"}
    assert dict(environ_headers(environ)) == {"x-forwarded-for": "1.2.3.4", "content-type": "a/b"}


def test_context_decisions_are_synchronous(snapshot: Snapshot) -> None:
    """WSGI decides with context through the engine's synchronous path."""
    provider = RecordingProvider()
    engine = Geofence(snapshot, parse_policy(POLICY), signals=provider)
    app = make_app(engine, subject=lambda info: Subject(id="user-1"))
    assert get(app, ADDR["route"]).json["action"] == "route"
    assert provider.calls == ["sync"]
