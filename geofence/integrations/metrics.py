"""Prometheus counters of decisions (needs the ``prometheus`` extra)."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from geofence.decision import Decision
from geofence.integrations.replies import reason_code

__all__ = ["PrometheusMetrics"]

_counter_lock = threading.Lock()
# Counters per registry: a second middleware (or a Django re-configuration) on the
# same registry reuses them instead of failing with "Duplicated timeseries".
_counters: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


class PrometheusMetrics:
    """Prometheus counters of decisions.

    Counters (``namespace`` defaults to ``geofence``):

    * ``geofence_decisions_total{action, reason}``: every decision made, by the
      action enforced and the first reason code (``rule:<id>``, ``default``,
      ``unknown_address``, ``client_address_unavailable``...). Reason codes come
      from the policy, so the label set stays as small as the policy.
    * ``geofence_shadow_decisions_total{action, rule}``: shadow-mode matches, by
      the action that would have applied and the shadow rule id.

    Args:
        registry: A ``prometheus_client.CollectorRegistry`` (default: the global one).
        namespace: Metric name prefix.

    Raises:
        ImportError: ``prometheus-client`` is not installed.
    """

    __slots__ = ("_children", "_decisions", "_shadow", "_shadow_children")

    def __init__(self, *, registry: Any = None, namespace: str = "geofence") -> None:
        # Any: prometheus_client is an optional dependency, imported lazily here.
        try:
            import prometheus_client
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "PrometheusMetrics needs prometheus-client: pip install 'geofence[prometheus]'"
            ) from exc
        reg = registry if registry is not None else prometheus_client.REGISTRY
        with _counter_lock:
            known = _counters.setdefault(reg, {})
            decisions = f"{namespace}_decisions"
            shadow = f"{namespace}_shadow_decisions"
            if decisions not in known:
                known[decisions] = prometheus_client.Counter(
                    decisions,
                    "Geofence decisions by enforced action and first reason code.",
                    ("action", "reason"),
                    registry=reg,
                )
            if shadow not in known:
                known[shadow] = prometheus_client.Counter(
                    shadow,
                    "Shadow-mode matches by the action that would have applied and rule id.",
                    ("action", "rule"),
                    registry=reg,
                )
            self._decisions = known[decisions]
            self._shadow = known[shadow]
        self._children: dict[tuple[str, str], Any] = {}
        self._shadow_children: dict[tuple[str, str], Any] = {}

    def observe(self, decision: Decision, route: str | None = None) -> None:
        """Count one decision (``route`` is accepted for symmetry with tracing)."""
        key = (decision.action.value, reason_code(decision))
        child = self._children.get(key)
        if child is None:  # labels() takes a lock; cache the child per label set
            child = self._children.setdefault(key, self._decisions.labels(*key))
        child.inc()
        if decision.shadow and decision.shadow_action is not None:
            skey = (decision.shadow_action.value, decision.shadow_rule_id or "policy")
            schild = self._shadow_children.get(skey)
            if schild is None:
                schild = self._shadow_children.setdefault(skey, self._shadow.labels(*skey))
            schild.inc()
