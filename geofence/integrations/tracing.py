"""OpenTelemetry span attributes of decisions (needs the ``otel`` extra).

The integration sets attributes on the span that is current while it decides:
the server span your OpenTelemetry instrumentation (``opentelemetry-instrument``,
``FastAPIInstrumentor``, ``FlaskInstrumentor``, ``DjangoInstrumentor``) opened
for the request. Nothing is recorded when no span is recording, and no span of
its own is started: a decision is one step of the request, not an operation.
"""

from __future__ import annotations

from typing import Any

from geofence.decision import Decision
from geofence.integrations.replies import reason_code

__all__ = ["OpenTelemetrySpans"]


class OpenTelemetrySpans:
    """Put the decision on the current span as ``geofence.*`` attributes.

    Attributes set: ``geofence.action``, ``geofence.reason``,
    ``geofence.rule_id``, ``geofence.country``, ``geofence.subdivision``,
    ``geofence.route``, ``geofence.policy_id``, ``geofence.snapshot_id``,
    ``geofence.shadow_action`` and ``geofence.degraded`` (only those with a
    value). Never the client address: span data often goes to third parties.

    Args:
        prefix: Attribute name prefix.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed.
    """

    __slots__ = ("_current_span", "_prefix")

    def __init__(self, *, prefix: str = "geofence") -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "OpenTelemetrySpans needs opentelemetry-api: pip install 'geofence[otel]'"
            ) from exc
        self._current_span: Any = trace.get_current_span
        self._prefix = prefix

    def observe(self, decision: Decision, route: str | None = None) -> None:
        """Set the decision's attributes on the current span, if it is recording."""
        span = self._current_span()
        if not span.is_recording():
            return
        span.set_attributes(self.attributes(decision, route))

    def attributes(self, decision: Decision, route: str | None = None) -> dict[str, Any]:
        """The attributes :meth:`observe` sets (names with the prefix)."""
        p = self._prefix
        values: dict[str, Any] = {
            f"{p}.action": decision.action.value,
            f"{p}.reason": reason_code(decision),
            f"{p}.rule_id": decision.rule_id,
            f"{p}.country": decision.country,
            f"{p}.subdivision": decision.subdivision,
            f"{p}.route": route,
            f"{p}.policy_id": decision.policy_id or None,
            f"{p}.snapshot_id": decision.snapshot_id or None,
            f"{p}.shadow_action": (
                decision.shadow_action.value if decision.shadow_action is not None else None
            ),
            f"{p}.degraded": decision.degraded or None,
        }
        return {name: value for name, value in values.items() if value is not None}
