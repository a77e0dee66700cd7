"""Tests of the Django middleware with Django's test Client and AsyncClient."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import django  # type: ignore[import-untyped]  # untyped package (no py.typed)
import httpx
import pytest
from django.conf import settings  # type: ignore[import-untyped]

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="geofence-tests-only",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["geofence.integrations.django.GeofenceMiddleware"],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

# Django must be configured before these imports; untyped package (no py.typed).
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.core.handlers.asgi import ASGIHandler  # type: ignore[import-untyped]
from django.http import JsonResponse  # type: ignore[import-untyped]
from django.test import AsyncClient, Client, override_settings  # type: ignore[import-untyped]
from django.urls import path, re_path  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry

from geofence.decision import Decision
from geofence.engine import Geofence
from geofence.integrations import django as gf_django
from geofence.integrations.common import PrometheusMetrics, RequestInfo
from tests.integrations.conftest import (
    ADDR,
    POLICY,
    STRICT_POLICY,
    snapshot_bytes,
)


def _payload(request: Any) -> dict[str, Any]:
    decision: Decision | None = request.geofence
    return {
        "action": decision.action.value if decision else None,
        "degraded": decision.degraded if decision else None,
        "route": request.geofence_route,
        "route_header": request.headers.get("X-Geofence-Route"),
    }


def echo(request: Any) -> Any:
    return JsonResponse(_payload(request))


async def aecho(request: Any) -> Any:
    return JsonResponse(_payload(request))


urlpatterns = [
    path("async/", aecho),
    re_path(r"^.*$", echo),
]

MIDDLEWARE = ["geofence.integrations.django.GeofenceMiddleware"]


def route_by_user(info: RequestInfo, decision: Decision) -> str | None:
    """A router hook referenced by dotted path from settings."""
    user = info.headers.get("x-user")
    return f"pool-{user}" if user else decision.route


def geofence_settings(**extra: Any) -> Any:
    """override_settings for these tests (urls, middleware and GEOFENCE)."""
    return override_settings(
        ROOT_URLCONF=__name__,
        MIDDLEWARE=MIDDLEWARE,
        ALLOWED_HOSTS=["testserver"],
        GEOFENCE=extra,
    )


@pytest.fixture(autouse=True)
def _fresh_gate() -> Any:
    """Each test builds the process-wide gate from its own settings."""
    gf_django.reset()
    yield
    gf_django.reset()


def get(ip: str, url: str = "/", **headers: str) -> Any:
    return Client(REMOTE_ADDR=ip).get(url, headers=headers)


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
    """allow, review, route and shadow reach the view; decision on request.geofence."""
    with geofence_settings(engine=engine):
        response = get(ADDR[key])
    assert response.status_code == 200
    assert response.json() == {
        "action": action,
        "degraded": False,
        "route": route,
        "route_header": route,
    }


@pytest.mark.parametrize("key", ["deny", "deny6"])
def test_deny_is_451(engine: Geofence, key: str) -> None:
    """Deny -> 451 with Link rel=blocked-by and the reason code only."""
    with geofence_settings(engine=engine, blocked_by="https://example.com/geo"):
        response = get(ADDR[key])
    assert response.status_code == 451
    assert response["Link"] == '<https://example.com/geo>; rel="blocked-by"'
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"]["error"] == "unavailable_for_legal_reasons"
    assert response.json()["detail"]["reason"] == "rule:deny-cu"


def test_challenge_variants(engine: Geofence) -> None:
    """Challenge -> 403 challenge_required, or a redirect."""
    with geofence_settings(engine=engine):
        response = get(ADDR["challenge"])
    assert response.status_code == 403
    assert response.json()["detail"]["error"] == "challenge_required"
    with geofence_settings(engine=engine, challenge_redirect="/verify"):
        response = get(ADDR["challenge"])
    assert response.status_code == 303
    assert response["Location"] == "/verify"


def test_spoofed_route_header_removed(engine: Geofence) -> None:
    """A client-sent route header never reaches the view."""
    with geofence_settings(engine=engine):
        assert get(ADDR["allow"], **{"X-Geofence-Route": "x"}).json()["route_header"] is None
        assert get(ADDR["route"], **{"X-Geofence-Route": "x"}).json()["route_header"] == "eu-tier"


def test_trusted_proxies_from_settings(engine: Geofence) -> None:
    """trusted_proxies as a mapping; spoofed X-Forwarded-For from others is ignored."""
    with geofence_settings(engine=engine, trusted_proxies={"cidrs": ["10.0.0.0/8"]}):
        assert get("10.2.3.4", **{"X-Forwarded-For": ADDR["deny"]}).status_code == 451
        assert get(ADDR["allow"], **{"X-Forwarded-For": ADDR["deny"]}).status_code == 200
        chain = {"X-Forwarded-For": f"{ADDR['allow']}, {ADDR['deny6']}"}
        assert get("10.2.3.4", **chain).status_code == 451


def test_engine_from_paths_with_route_policies(tmp_path: Path) -> None:
    """Policy and snapshot paths, per-route policy paths, exempt paths, a dotted router hook."""
    snap = tmp_path / "test.gfs"
    snap.write_bytes(snapshot_bytes())
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    strict = tmp_path / "strict.toml"
    strict.write_text(STRICT_POLICY, encoding="utf-8")
    options = {
        "snapshot": str(snap),
        "policy": str(policy),
        "route_policies": {"/v1/frontier": str(strict)},
        "exempt_paths": ["/healthz"],
        "router": f"{__name__}.route_by_user",
        "audit": {"allow_sample_rate": 0.0},
    }
    with geofence_settings(**options):
        assert get(ADDR["allow"], "/v1/basic").status_code == 200
        assert get(ADDR["allow"], "/v1/frontier/x").status_code == 451
        assert get(ADDR["deny"], "/healthz").json()["action"] is None
        assert get(ADDR["allow"], "/", **{"X-User": "7"}).json()["route_header"] == "pool-7"
        gate = gf_django.get_gate()
        assert gate is gf_django.get_gate()  # built once per process
        assert gate.geofence.policy.id == "test-integrations"


def test_gate_rebuilt_when_settings_change(engine: Geofence, strict_engine: Geofence) -> None:
    """Overriding GEOFENCE resets the process-wide gate."""
    with geofence_settings(engine=engine):
        first = gf_django.get_gate()
        assert get(ADDR["allow"]).status_code == 200
        with geofence_settings(engine=strict_engine):
            assert get(ADDR["allow"]).status_code == 451
            assert gf_django.get_gate() is not first


def test_fail_closed_and_open(engine: Geofence) -> None:
    """No usable REMOTE_ADDR: closed -> 451; open -> served as degraded review."""
    with geofence_settings(engine=engine):
        response = get("")
    assert response.status_code == 451
    assert response.json()["detail"]["reason"] == "client_address_unavailable"
    with geofence_settings(engine=engine, fail_mode="open"):
        response = get("")
    assert response.json()["action"] == "review"
    assert response.json()["degraded"] is True


def test_response_headers_audit_and_metrics(engine: Geofence, audit_caplog: Any) -> None:
    """Decision header on responses, JSON audit lines, counters."""
    registry = CollectorRegistry()
    options = {
        "engine": engine,
        "decision_header": "X-Geofence-Decision",
        "metrics": PrometheusMetrics(registry=registry),
    }
    with geofence_settings(**options):
        assert get(ADDR["review"])["X-Geofence-Decision"] == "review"
        assert get(ADDR["deny"])["X-Geofence-Decision"] == "deny"
    lines = [json.loads(r.getMessage()) for r in audit_caplog.records if r.name == "geofence.audit"]
    assert [(line["event"], line["integration"]) for line in lines] == [
        ("review", "django"),
        ("deny", "django"),
    ]
    labels = {"action": "review", "reason": "rule:review-gb"}
    assert registry.get_sample_value("geofence_decisions_total", labels) == 1


async def test_async_stack(engine: Geofence) -> None:
    """Under ASGI with an async view the middleware runs its async path."""
    with geofence_settings(engine=engine):
        local = await AsyncClient().get("/async/")  # peer 127.0.0.1: reserved, allowed
        assert local.json()["action"] == "allow"
        # Django's ASGI handler with the peer set: the scope's client becomes REMOTE_ADDR.
        for key, status in (("route", 200), ("deny", 451)):
            transport = httpx.ASGITransport(app=ASGIHandler(), client=(ADDR[key], 0))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                response = await c.get("/async/")
            assert response.status_code == status
            if status == 200:
                assert response.json()["route"] == "eu-tier"


@pytest.mark.parametrize(
    "options",
    [
        {"engine": "not-a-geofence"},
        {"fail_mode": "maybe"},
        {"route_policies": ["/x"]},
    ],
)
def test_invalid_settings(options: dict[str, Any]) -> None:
    """Invalid GEOFENCE settings raise ImproperlyConfigured."""
    with geofence_settings(**options), pytest.raises(ImproperlyConfigured):
        gf_django.get_gate()


def test_engine_excludes_engine_keys(engine: Geofence) -> None:
    """'engine' together with 'policy' is ambiguous and refused."""
    with geofence_settings(engine=engine, policy="allow-all"), pytest.raises(ImproperlyConfigured):
        gf_django.get_gate()


def test_policy_is_required() -> None:
    """Without 'policy' or 'engine' nothing is silently allowed: configuration error."""
    with (
        geofence_settings(exempt_paths=["/x"]),
        pytest.raises(ImproperlyConfigured, match="policy"),
    ):
        gf_django.get_gate()


def test_engine_with_route_policy_engines(engine: Geofence, strict_engine: Geofence) -> None:
    """'engine' combines with route_policies given as engines or policy references."""
    routes = {"/strict": strict_engine, "/preset": "allow-all"}
    with geofence_settings(engine=engine, route_policies=routes):
        assert get(ADDR["allow"], "/strict/x").status_code == 451
        assert get(ADDR["deny"], "/preset/x").status_code == 200
        assert get(ADDR["deny"], "/other").status_code == 451


def test_settings_must_be_a_dict() -> None:
    """GEOFENCE must be a dict."""
    with override_settings(GEOFENCE=["x"]), pytest.raises(ImproperlyConfigured):
        gf_django.get_gate()


# -- system checks (manage.py check) -----------------------------------------------------------


def test_system_check_fails_on_a_mistyped_policy_name() -> None:
    """A typo in the preset name fails `manage.py check` (geofence.E002), naming the typo."""
    from django.core.management import call_command  # type: ignore[import-untyped]
    from django.core.management.base import SystemCheckError  # type: ignore[import-untyped]

    with geofence_settings(policy="us-ofac-comprehensiv"):
        errors = gf_django.check_settings()
        assert [e.id for e in errors] == ["geofence.E002"]
        assert "us-ofac-comprehensiv" in errors[0].msg
        with pytest.raises(SystemCheckError, match="us-ofac-comprehensiv"):
            call_command("check")


def test_system_check_on_invalid_options_and_missing_middleware(engine: Geofence) -> None:
    """Unknown options are E001; settings without the middleware are W001; good ones pass."""
    with geofence_settings(engine=engine, exempt_pahts=["/healthz"]):
        errors = gf_django.check_settings()
        assert [e.id for e in errors] == ["geofence.E001"]
        assert "exempt_pahts" in errors[0].msg
    with override_settings(MIDDLEWARE=[], GEOFENCE={"engine": engine}):
        assert [e.id for e in gf_django.check_settings()] == ["geofence.W001"]
    with override_settings(MIDDLEWARE=[]):
        assert gf_django.check_settings() == []
    with geofence_settings(engine=engine):
        assert gf_django.check_settings() == []
        assert gf_django.get_gate().geofence is engine  # the checked gate serves requests


def test_challenge_redirect_target_is_not_challenged(engine: Geofence) -> None:
    """Following the challenge redirect ends on the target with a 200, not a loop."""
    with geofence_settings(engine=engine, challenge_redirect="/verify-location/"):
        response = Client(REMOTE_ADDR=ADDR["challenge"]).get("/v1/models", follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [("/verify-location/", 303)]
    assert response.json()["action"] == "challenge"  # the page knows why it is shown
