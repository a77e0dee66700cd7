"""geofence: jurisdiction rules for API requests, fast and auditable.

Importing this package is cheap: submodules load on first use of a name, and
no data is read until you open a snapshot (``Snapshot.default()``,
``Snapshot.open(path)``) or build an engine (``Geofence(...)``)::

    from geofence import Geofence

    gf = Geofence(policy="us-ofac-comprehensive")
    decision = gf.decide("203.0.113.7")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from geofence.addr import ParsedAddress, TunnelKind, parse_address
    from geofence.context import Context, Subject
    from geofence.decision import Action, Decision, Verdict
    from geofence.engine import Geofence
    from geofence.errors import (
        AddressNotFoundError,
        ContextError,
        DataAgeWarning,
        GeofenceError,
        InvalidAddressError,
        PolicyError,
        SnapshotError,
        SourceError,
        StoreError,
        TrustWarning,
    )
    from geofence.kinds import NetworkKind, SpecialRange
    from geofence.policy import Policy, load_policy, parse_policy
    from geofence.records import LookupResult, NetworkRecord
    from geofence.reloading import Health, Retry
    from geofence.signals.base import Signal
    from geofence.snapshot.reader import Snapshot
    from geofence.snapshot.search import core_info

_EXPORTS = {
    "Action": "geofence.decision",
    "AddressNotFoundError": "geofence.errors",
    "Context": "geofence.context",
    "ContextError": "geofence.errors",
    "DataAgeWarning": "geofence.errors",
    "Decision": "geofence.decision",
    "Geofence": "geofence.engine",
    "GeofenceError": "geofence.errors",
    "Health": "geofence.reloading",
    "InvalidAddressError": "geofence.errors",
    "LookupResult": "geofence.records",
    "NetworkKind": "geofence.kinds",
    "NetworkRecord": "geofence.records",
    "ParsedAddress": "geofence.addr",
    "Policy": "geofence.policy",
    "PolicyError": "geofence.errors",
    "Retry": "geofence.reloading",
    "Signal": "geofence.signals.base",
    "Snapshot": "geofence.snapshot.reader",
    "SnapshotError": "geofence.errors",
    "SourceError": "geofence.errors",
    "SpecialRange": "geofence.kinds",
    "StoreError": "geofence.errors",
    "Subject": "geofence.context",
    "TrustWarning": "geofence.errors",
    "TunnelKind": "geofence.addr",
    "Verdict": "geofence.decision",
    "core_info": "geofence.snapshot.search",
    "load_policy": "geofence.policy",
    "parse_address": "geofence.addr",
    "parse_policy": "geofence.policy",
}

__all__ = [
    "Action",
    "AddressNotFoundError",
    "Context",
    "ContextError",
    "DataAgeWarning",
    "Decision",
    "Geofence",
    "GeofenceError",
    "Health",
    "InvalidAddressError",
    "LookupResult",
    "NetworkKind",
    "NetworkRecord",
    "ParsedAddress",
    "Policy",
    "PolicyError",
    "Retry",
    "Signal",
    "Snapshot",
    "SnapshotError",
    "SourceError",
    "SpecialRange",
    "StoreError",
    "Subject",
    "TrustWarning",
    "TunnelKind",
    "Verdict",
    "__version__",
    "core_info",
    "load_policy",
    "parse_address",
    "parse_policy",
]


def __getattr__(name: str) -> Any:
    """Load exported names on first use (keeps ``import geofence`` cheap)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'geofence' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
