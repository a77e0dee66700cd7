"""``route:<target>`` to what serves it: RouteTable and the FastAPI RouteDependency.

No ``from __future__ import annotations`` here: FastAPI resolves route
annotations at runtime.
"""

from collections.abc import Callable
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from geofence.engine import Geofence
from geofence.errors import GeofenceError
from geofence.integrations.asgi import GeofenceMiddleware
from geofence.integrations.fastapi import RouteDependency
from geofence.integrations.routing import RouteTable, UnknownRouteError, policy_routes
from geofence.policy import parse_policy
from tests.integrations.conftest import ADDR

ROUTED = """
[policy]
id = "tiers"
default = "allow"
on_unknown = "route:fallback-tier"

[[rules]]
id = "eu"
action = "route:eu-tier"
jurisdictions = ["DE"]
"""


def test_policy_routes_lists_every_target() -> None:
    """Rules and fallbacks: every route target a policy can decide."""
    assert policy_routes(parse_policy(ROUTED)) == {"eu-tier", "fallback-tier"}


def test_route_table_resolves_and_refuses_unknown_targets() -> None:
    """Known targets map; None is the default; an unknown target raises (never the default)."""
    table = RouteTable({"eu-tier": "https://eu.example", "fallback-tier": "x"}, default="main")
    assert table.resolve(None) == "main"
    assert table.resolve("eu-tier") == "https://eu.example"
    with pytest.raises(UnknownRouteError, match="us-tier") as info:
        table.resolve("us-tier")
    assert isinstance(info.value, GeofenceError)
    assert isinstance(info.value, LookupError)
    assert sorted(table) == ["eu-tier", "fallback-tier"]
    assert len(table) == 2


def test_route_table_checks_the_policy_up_front() -> None:
    """A table missing a target the policy can decide is refused when built."""
    with pytest.raises(ValueError, match="fallback-tier"):
        RouteTable({"eu-tier": 1}, default=0, policy=parse_policy(ROUTED))
    RouteTable({"eu-tier": 1, "fallback-tier": 2}, default=0, policy=parse_policy(ROUTED))
    with pytest.raises(ValueError, match="targets"):
        RouteTable({1: "x"}, default="y")  # type: ignore[dict-item]


def _model(name: str) -> Callable[[str], str]:
    return lambda prompt: f"{name}: {prompt}"


def test_fastapi_route_dependency_picks_the_model(engine: Geofence) -> None:
    """With the middleware, the dependency gives each request the model for its target."""
    models = RouteTable({"eu-tier": _model("eu-small")}, default=_model("frontier"))
    app = FastAPI()
    app.add_middleware(GeofenceMiddleware, geofence=engine)

    @app.post("/v1/generate")
    def generate(
        model: Annotated[Callable[[str], str], Depends(RouteDependency(models))],
    ) -> dict[str, str]:
        return {"text": model("hi")}

    def ask(ip: str) -> dict[str, str]:
        response = TestClient(app, client=(ip, 5000)).post("/v1/generate")
        assert response.status_code == 200
        return dict(response.json())

    assert ask(ADDR["allow"]) == {"text": "frontier: hi"}
    assert ask(ADDR["route"]) == {"text": "eu-small: hi"}
    assert ask(ADDR["route6"]) == {"text": "eu-small: hi"}


def test_fastapi_route_dependency_with_an_unknown_target_fails_loudly(engine: Geofence) -> None:
    """A target missing from the table is a server error, not a silent default."""
    app = FastAPI()
    app.add_middleware(GeofenceMiddleware, geofence=engine)
    table: RouteTable[str] = RouteTable({}, default="main")

    @app.get("/")
    def index(upstream: Annotated[str, Depends(RouteDependency(table))]) -> dict[str, str]:
        return {"upstream": upstream}

    client = TestClient(app, client=(ADDR["route"], 5000), raise_server_exceptions=False)
    assert client.get("/").status_code == 500
    assert TestClient(app, client=(ADDR["allow"], 5000)).get("/").json() == {"upstream": "main"}
