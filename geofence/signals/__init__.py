"""Workaround signals: proxy chains, network kinds, client hints and account history.

Every signal is evidence with a reason code and a weight; the policy decides
what it leads to (see ``docs/signals.md``). Names load on first use so that
``import geofence.signals`` stays cheap (Redis and the tz tables load lazily).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from geofence.signals.base import Signal

if TYPE_CHECKING:
    from geofence.signals.history import HistoryConfig, HistoryView, Observation
    from geofence.signals.pipeline import SignalConfig, SignalPipeline
    from geofence.signals.proxy import ClientAddress, TrustedProxies, resolve_client
    from geofence.signals.stores import (
        AsyncRedisHistoryStore,
        MemoryHistoryStore,
        RedisHistoryStore,
    )

_EXPORTS = {
    "AsyncRedisHistoryStore": "geofence.signals.stores",
    "ClientAddress": "geofence.signals.proxy",
    "HistoryConfig": "geofence.signals.history",
    "HistoryView": "geofence.signals.history",
    "MemoryHistoryStore": "geofence.signals.stores",
    "Observation": "geofence.signals.history",
    "RedisHistoryStore": "geofence.signals.stores",
    "SignalConfig": "geofence.signals.pipeline",
    "SignalPipeline": "geofence.signals.pipeline",
    "TrustedProxies": "geofence.signals.proxy",
    "resolve_client": "geofence.signals.proxy",
}

__all__ = [
    "AsyncRedisHistoryStore",
    "ClientAddress",
    "HistoryConfig",
    "HistoryView",
    "MemoryHistoryStore",
    "Observation",
    "RedisHistoryStore",
    "Signal",
    "SignalConfig",
    "SignalPipeline",
    "TrustedProxies",
    "resolve_client",
]


def __getattr__(name: str) -> Any:
    """Load exported names on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'geofence.signals' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
