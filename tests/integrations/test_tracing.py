"""OpenTelemetry span attributes (action, rule, country, route) with the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from geofence.engine import Geofence
from geofence.integrations.config import GeofenceConfig
from geofence.integrations.gate import Gate
from geofence.integrations.tracing import OpenTelemetrySpans
from tests.integrations.conftest import ADDR


@pytest.fixture
def spans() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    """A tracer writing to an in-memory exporter (its own provider, not the global one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def decide_in_span(tracer: trace.Tracer, g: Gate, peer: str) -> Any:
    with tracer.start_as_current_span("request"):
        return g.check(kind="http", method="GET", path="/", peer=peer, headers=[], native=None)


def test_decisions_become_span_attributes(
    engine: Geofence, spans: tuple[trace.Tracer, InMemorySpanExporter]
) -> None:
    """action, reason, rule, country, route and policy land on the request's span."""
    tracer, exporter = spans
    g = Gate(engine, GeofenceConfig.from_options(tracing=True), integration="test")
    decide_in_span(tracer, g, ADDR["route"])
    decide_in_span(tracer, g, ADDR["deny"])
    routed, denied = (dict(span.attributes or {}) for span in exporter.get_finished_spans())
    assert routed["geofence.action"] == "route"
    assert routed["geofence.route"] == "eu-tier"
    assert routed["geofence.rule_id"] == "route-de"
    assert routed["geofence.country"] == "DE"
    assert routed["geofence.policy_id"] == "test-integrations"
    assert denied["geofence.action"] == "deny"
    assert denied["geofence.reason"] == "rule:deny-cu"
    assert "geofence.route" not in denied
    assert all(ADDR["deny"] not in str(value) for value in denied.values())  # no addresses


def test_shadow_and_no_span(
    engine: Geofence, spans: tuple[trace.Tracer, InMemorySpanExporter]
) -> None:
    """Shadow matches carry shadow_action; outside a span nothing happens (no error)."""
    tracer, exporter = spans
    g = Gate(engine, GeofenceConfig(tracing=OpenTelemetrySpans()), integration="test")
    decide_in_span(tracer, g, ADDR["shadow"])
    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {})["geofence.shadow_action"] == "deny"
    verdict = g.check(
        kind="http", method="GET", path="/", peer=ADDR["deny"], headers=[], native=None
    )
    assert verdict.reply is not None
    assert len(exporter.get_finished_spans()) == 1


def test_attributes_prefix() -> None:
    """The attribute prefix is configurable."""
    from geofence.decision import Action, Decision

    attributes = OpenTelemetrySpans(prefix="gf").attributes(
        Decision(action=Action.ALLOW, reasons=("default",), outcome="default"), None
    )
    assert attributes == {"gf.action": "allow", "gf.reason": "default"}
