"""Refusals as API clients meet them: status, body shape, legal details, challenge target.

No ``from __future__ import annotations`` here: FastAPI resolves route
annotations at runtime.
"""

from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from geofence.decision import Action, Decision
from geofence.engine import Geofence
from geofence.integrations.asgi import GeofenceMiddleware
from geofence.integrations.config import GeofenceConfig
from geofence.integrations.fastapi import GeofenceDependency
from geofence.integrations.gate import Gate
from geofence.policy import parse_policy
from geofence.testing import make_snapshot
from tests.integrations.conftest import ADDR

CITED = """
[policy]
id = "cited"
default = "allow"
on_unresolved = "challenge"

[[rules]]
id = "ofac-cuba"
action = "deny"
jurisdictions = ["CU"]
description = "Comprehensive embargo on Cuba"
citation = "31 CFR part 515"

[[rules]]
id = "ofac-crimea"
action = "deny"
jurisdictions = ["UA-43"]
description = "Crimea region of Ukraine"
citation = "EO 13685"

[[rules]]
id = "verify-fr"
action = "challenge"
jurisdictions = ["FR"]
"""

NETWORKS = {
    "2.0.0.0/8": {"country": "CU"},
    "4.0.0.0/8": {"country": "FR"},
    "7.0.0.0/8": {"country": "UA"},  # country only: a UA-43 rule cannot be resolved
    "1.0.0.0/8": {"country": "US"},
}


@pytest.fixture(scope="module")
def cited() -> Geofence:
    return Geofence(make_snapshot(NETWORKS), parse_policy(CITED))


def gate(engine: Geofence, **options: Any) -> Gate:
    return Gate(engine, GeofenceConfig.from_options(**options), integration="test")


def check(g: Gate, peer: str, path: str = "/") -> Any:
    return g.check(kind="http", method="GET", path=path, peer=peer, headers=[], native=None)


def body(reply: Any) -> Any:
    import json

    return json.loads(reply.body)


# -- point 4: the 451 body explains the legal demand (RFC 7725) -------------------------------


def test_451_body_carries_the_rule_description_and_citation(cited: Geofence) -> None:
    """The deny body names the rule, its description and its citation."""
    reply = check(gate(cited, blocked_by="https://example.com/legal"), "2.0.0.1").reply
    assert reply.status == 451
    detail = body(reply)["detail"]
    assert detail == {
        "error": "unavailable_for_legal_reasons",
        "reason": "rule:ofac-cuba",
        "rule": "ofac-cuba",
        "description": "Comprehensive embargo on Cuba",
        "citation": "31 CFR part 515",
        "blocked_by": "https://example.com/legal",
        "message": "This service is not available at your location for legal reasons.",
    }


def test_refusal_details_can_be_left_out(cited: Geofence) -> None:
    """refusal_details=False: only the reason code and the message."""
    detail = body(check(gate(cited, refusal_details=False), "2.0.0.1").reply)["detail"]
    assert set(detail) == {"error", "reason", "message"}


def test_plain_body_carries_the_citation(cited: Geofence) -> None:
    """body_format=plain: the description and citation are lines of the text."""
    reply = check(gate(cited, body_format="plain"), "2.0.0.1").reply
    text = reply.body.decode()
    assert "Rule: Comprehensive embargo on Cuba" in text
    assert "Citation: 31 CFR part 515" in text


def test_details_follow_a_reload(snapshot_and_policies: Any) -> None:
    """After a reload that changes the rule's citation, the body carries the new one."""
    engine, new_policy = snapshot_and_policies
    g = gate(engine)
    assert body(check(g, "2.0.0.1").reply)["detail"]["citation"] == "31 CFR part 515"
    engine.reload(policy=new_policy)
    assert body(check(g, "2.0.0.1").reply)["detail"]["citation"] == "31 CFR 515.201"


@pytest.fixture
def snapshot_and_policies() -> Any:
    engine = Geofence(make_snapshot(NETWORKS), parse_policy(CITED))
    return engine, parse_policy(CITED.replace("31 CFR part 515", "31 CFR 515.201"))


# -- points 2 and 3: a challenge API clients can act on ----------------------------------------


def test_challenge_is_403_with_a_machine_readable_body(cited: Geofence) -> None:
    """403 (never 401 unless asked), error challenge_required, where to verify."""
    reply = check(gate(cited, challenge_url="https://example.com/verify"), "4.0.0.1").reply
    assert reply.status == 403
    assert all(name.lower() != "www-authenticate" for name, _ in reply.headers)
    detail = body(reply)["detail"]
    assert detail["error"] == "challenge_required"
    assert detail["challenge"] == "step-up"
    assert detail["reason"] == "rule:verify-fr"
    assert detail["verify"] == "https://example.com/verify"


def test_unresolved_challenge_says_why_in_a_form_clients_act_on(cited: Geofence) -> None:
    """A subdivision rule on country-only data: outcome unresolved, reason and message say so."""
    decision = cited.decide("7.0.0.1")
    assert decision.action is Action.CHALLENGE
    assert decision.outcome == "unresolved"
    detail = body(check(gate(cited), "7.0.0.1").reply)["detail"]
    assert detail["outcome"] == "unresolved"
    assert detail["reason"] == "unresolved:subdivision"
    assert detail["rule"] == "ofac-crimea"
    assert "location could not be determined" in detail["message"]
    assert "verification" in detail["message"]


@pytest.mark.parametrize("status", [401, 403, 428, 449])
def test_challenge_status_is_configurable(cited: Geofence, status: int) -> None:
    """Any 4xx; 401 brings WWW-Authenticate with the challenge type."""
    reply = check(gate(cited, challenge_status=status, challenge_type="kyc"), "4.0.0.1").reply
    assert reply.status == status
    authenticate = [v for k, v in reply.headers if k == "WWW-Authenticate"]
    assert authenticate == (['Geofence challenge="kyc"'] if status == 401 else [])


@pytest.mark.parametrize("status", [200, 303, 500, "403", True])
def test_challenge_status_must_be_a_client_error(status: object) -> None:
    """Non-4xx statuses (and non-integers) are refused, naming the option."""
    with pytest.raises(ValueError, match="challenge_status"):
        GeofenceConfig.from_options(challenge_status=status)  # type: ignore[arg-type]


# -- point 1: a challenge target is never challenged itself ------------------------------------


def check_at(g: Gate, peer: str, path: str, host: str = "api.example.com") -> Any:
    headers = [("Host", host)]
    return g.check(kind="http", method="GET", path=path, peer=peer, headers=headers, native=None)


@pytest.mark.parametrize(
    "target",
    ["/verify-location/", "/verify-location", "https://api.example.com/verify-location/"],
)
def test_challenge_target_is_never_challenged(cited: Geofence, target: str) -> None:
    """Without exempting it, the redirect target (and below) serves challenged clients."""
    g = gate(cited, challenge_redirect=target)
    elsewhere = check_at(g, "4.0.0.1", "/v1/models")
    assert elsewhere.reply is not None
    assert elsewhere.reply.status == 303
    for path in ("/verify-location/", "/verify-location/step-2"):
        verdict = check_at(g, "4.0.0.1", path)
        assert verdict.reply is None, path  # served: no redirect loop
        assert verdict.decision.action is Action.CHALLENGE  # the page knows why
    assert check_at(g, "2.0.0.1", "/verify-location/").reply.status == 451  # deny still applies
    assert check_at(g, "4.0.0.1", "/verify-locationx").reply.status == 303


def test_an_absolute_target_elsewhere_lets_nothing_through(cited: Geofence) -> None:
    """A target on another host (path "/") does not exempt this application's paths."""
    g = gate(cited, challenge_redirect="https://kyc.example.com/")
    for path in ("/", "/v1/models"):
        assert check_at(g, "4.0.0.1", path).reply.status == 303
    assert check_at(g, "4.0.0.1", "/start", host="KYC.example.com").reply is None


def test_following_the_challenge_redirect_ends_on_the_target(cited: Geofence) -> None:
    """An HTTP client following redirects lands on the verification page (curl -L)."""
    app = FastAPI()

    @app.get("/verify-location/")
    def verify() -> dict[str, str]:
        return {"page": "verify"}

    @app.get("/v1/models")
    def models() -> dict[str, str]:
        return {"page": "models"}

    app.add_middleware(GeofenceMiddleware, geofence=cited, challenge_redirect="/verify-location/")
    client = TestClient(app, client=("4.0.0.1", 5000), follow_redirects=True)
    response = client.get("/v1/models")
    assert response.status_code == 200
    assert response.json() == {"page": "verify"}
    assert len(response.history) == 1


# -- point 9: shadow mode as an integration option ---------------------------------------------


def test_shadow_option_serves_and_records(cited: Geofence, audit_caplog: Any) -> None:
    """shadow=True: nothing is refused, the decision records what would have applied."""
    import json

    g = gate(cited, shadow=True)
    verdict = check(g, "2.0.0.1", "/v1")
    assert verdict.reply is None
    assert verdict.decision.action is Action.ALLOW
    assert verdict.decision.shadow_action is Action.DENY
    assert verdict.decision.shadow_rule_id == "ofac-cuba"
    assert check(g, "2.0.0.1", "/v1").decision is verdict.decision  # cached per decision
    assert check(g, "1.0.0.1").decision.shadow is False  # allows are left as they are
    lines = [json.loads(r.getMessage()) for r in audit_caplog.records]
    assert [line["event"] for line in lines] == ["shadow", "shadow"]
    assert lines[0]["shadow_action"] == "deny"


# -- point 12: one body shape for the middleware and the FastAPI dependency ---------------------


def _both_apps(engine: Geofence, **options: Any) -> tuple[FastAPI, FastAPI]:
    middleware_app = FastAPI()

    @middleware_app.get("/x")
    def plain() -> dict[str, str]:
        return {"ok": "yes"}

    middleware_app.add_middleware(GeofenceMiddleware, geofence=engine, **options)
    dependency_app = FastAPI()
    dependency = GeofenceDependency(engine, **options)

    @dependency_app.get("/x")
    def guarded(decision: Annotated[Decision | None, Depends(dependency)]) -> dict[str, str]:
        return {"ok": "yes"}

    return middleware_app, dependency_app


@pytest.mark.parametrize("peer", ["2.0.0.1", "4.0.0.1", "7.0.0.1"])
@pytest.mark.parametrize("body_format", ["json", "plain"])
def test_middleware_and_dependency_send_one_shape(
    cited: Geofence, peer: str, body_format: str
) -> None:
    """Same status, same JSON body, same Link and Cache-Control from both."""
    options = {"blocked_by": "https://example.com/legal", "body_format": body_format}
    middleware_app, dependency_app = _both_apps(cited, **options)
    ours = TestClient(middleware_app, client=(peer, 5000)).get("/x")
    theirs = TestClient(dependency_app, client=(peer, 5000)).get("/x")
    assert ours.status_code == theirs.status_code
    assert ours.headers.get("link") == theirs.headers.get("link")
    assert ours.headers["cache-control"] == theirs.headers["cache-control"] == "no-store"
    if body_format == "json":
        assert ours.json() == theirs.json()
        assert set(ours.json()) == {"detail"}
    else:
        assert theirs.json() == {"detail": ours.text}


def test_one_shape_for_the_integrations_own_refusals(engine: Geofence) -> None:
    """A fail-closed refusal (no client address) has the same shape too."""
    middleware_app, dependency_app = _both_apps(engine)
    ours = TestClient(middleware_app).get("/x")  # "testclient" is no address
    theirs = TestClient(dependency_app).get("/x")
    assert ours.status_code == theirs.status_code == 451
    assert ours.json() == theirs.json()
    assert ours.json()["detail"]["reason"] == "client_address_unavailable"
    assert ADDR["deny"] not in ours.text
