"""The Flask extension: ``Geofence(app)`` / ``init_app(app)`` configured from ``app.config``."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, g

from geofence.decision import Decision
from geofence.engine import Geofence as Engine
from geofence.errors import PolicyError
from geofence.integrations.flask import Geofence
from geofence.integrations.settings import SettingsError
from geofence.policy import parse_policy
from geofence.snapshot.reader import Snapshot
from tests.integrations.conftest import ADDR, POLICY


def make_app(settings: dict[str, Any] | None) -> Flask:
    app = Flask(__name__)
    if settings is not None:
        app.config["GEOFENCE"] = settings

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        decision: Decision | None = g.geofence
        return {
            "action": decision.action.value if decision else None,
            "route": g.geofence_route,
        }

    @app.get("/verify-location/")
    def verify() -> dict[str, Any]:
        decision: Decision | None = g.geofence
        return {"page": "verify", "action": decision.action.value if decision else None}

    return app


def test_configured_from_app_config(snapshot: Snapshot) -> None:
    """app.config["GEOFENCE"] builds the engine; the decision is on g."""
    app = make_app(
        {"policy": parse_policy(POLICY), "snapshot": snapshot, "exempt_paths": ["/healthz"]}
    )
    Geofence(app)
    client = app.test_client()
    routed = client.get("/v1/models", environ_base={"REMOTE_ADDR": ADDR["route"]})
    assert routed.json == {"action": "route", "route": "eu-tier"}
    denied = client.get("/v1/models", environ_base={"REMOTE_ADDR": ADDR["deny"]})
    assert denied.status_code == 451
    assert denied.json is not None
    assert denied.json["detail"]["rule"] == "deny-cu"
    assert Geofence.gate(app).config.exempt_paths == frozenset({"/healthz"})


def test_init_app_factory_pattern(snapshot: Snapshot) -> None:
    """One extension object, several apps, each with its own configuration."""
    extension = Geofence()
    strict = make_app({"policy": parse_policy(POLICY), "snapshot": snapshot})
    shadow = make_app({"policy": parse_policy(POLICY), "snapshot": snapshot, "shadow": True})
    extension.init_app(strict)
    extension.init_app(shadow)
    peer = {"REMOTE_ADDR": ADDR["deny"]}
    assert strict.test_client().get("/v1/models", environ_base=peer).status_code == 451
    served = shadow.test_client().get("/v1/models", environ_base=peer)
    assert served.json == {"action": "allow", "route": None}
    with pytest.raises(RuntimeError, match="already"):
        extension.init_app(strict)


def test_challenge_redirect_does_not_loop(snapshot: Snapshot) -> None:
    """A challenged client following the redirect lands on the verification page."""
    app = make_app(
        {
            "policy": parse_policy(POLICY),
            "snapshot": snapshot,
            "challenge_redirect": "/verify-location/",
        }
    )
    Geofence(app)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ADDR["challenge"]  # also for the redirected request
    response = client.get("/v1/models", follow_redirects=True)
    assert response.status_code == 200
    assert response.json == {"page": "verify", "action": "challenge"}
    assert len(response.history) == 1


def test_engine_and_options_instead_of_config(engine: Engine) -> None:
    """Geofence(app, geofence=..., **options) uses the given engine."""
    app = make_app(None)
    Geofence(app, geofence=engine, trusted_proxies="127.0.0.1")
    client = app.test_client()  # connects from 127.0.0.1, trusted
    routed = client.get("/v1/models", headers={"X-Forwarded-For": ADDR["route6"]})
    assert routed.json == {"action": "route", "route": "eu-tier"}
    with pytest.raises(ValueError, match="need an engine"):
        Geofence(trusted_proxies="127.0.0.1")


def test_bad_configuration_fails_at_init_app(snapshot: Snapshot) -> None:
    """No policy, a mistyped preset, an unknown option: errors at start-up, naming the key."""
    with pytest.raises(SettingsError, match="GEOFENCE needs 'policy'"):
        Geofence(make_app({}))
    with pytest.raises(SettingsError, match="GEOFENCE must be a dict"):
        Geofence(make_app(None))
    with pytest.raises(PolicyError, match="us-ofac-comprehensiv"):
        Geofence(make_app({"policy": "us-ofac-comprehensiv", "snapshot": snapshot}))
    with pytest.raises(SettingsError, match="exempt_pahts"):
        Geofence(make_app({"policy": parse_policy(POLICY), "exempt_pahts": ["/x"]}))
