"""Helpers shared by the audit tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from geofence.decision import Decision
from geofence.engine import Geofence


def action_name(d: Decision) -> str:
    """How the summary names an action (``route:<target>`` for routes)."""
    return f"route:{d.route}" if d.route else d.action.value


def expected_actions(gf: Geofence, clients: Iterable[str]) -> dict[str, int]:
    """Requests per action name when each client is decided by ``gf.decide``."""
    return dict(Counter(action_name(gf.decide(c)) for c in clients))


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """A summary breakdown as {key: requests}."""
    return {r["key"]: r["requests"] for r in rows}


def accounted(summary: dict[str, Any]) -> int:
    """Lines the summary accounts for: decided, invalid, unparsed and header lines."""
    return int(summary["decided"] + summary["invalid"] + summary["unparsed"] + summary["headers"])
