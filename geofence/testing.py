"""Public helpers for your own tests: small in-memory snapshots and engines.

Example::

    from geofence.testing import make_geofence

    gf = make_geofence(
        {"5.0.0.0/8": {"country": "IR"}, "8.8.8.0/24": {"country": "US", "kinds": ["hosting"]}},
        policy='''
            [policy]
            id = "test"
            [[rules]]
            id = "ir"
            action = "deny"
            jurisdictions = ["IR"]
        ''',
    )
    assert gf.decide("5.1.2.3").blocked

Special-purpose addresses (private, documentation ranges such as
``192.0.2.0/24``) are always decided by ``on_reserved``, so use public
addresses in test data.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping
from typing import Any

from geofence.engine import Geofence
from geofence.kinds import NetworkKind, kinds_from_names
from geofence.policy.model import Policy
from geofence.policy.parse import parse_policy
from geofence.records import NetworkRecord
from geofence.snapshot.build import build_snapshot
from geofence.snapshot.reader import Snapshot
from geofence.sources.base import RangeEntry, Source, SourceInfo

__all__ = ["make_geofence", "make_snapshot"]

_FIXED_TIME = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _record(value: NetworkRecord | Mapping[str, Any]) -> NetworkRecord:
    if isinstance(value, NetworkRecord):
        return value
    fields = dict(value)
    kinds = fields.pop("kinds", NetworkKind.UNKNOWN)
    if not isinstance(kinds, NetworkKind):
        kinds = kinds_from_names(kinds)
    return NetworkRecord(kinds=kinds, **fields)


def make_snapshot(
    networks: Mapping[str, NetworkRecord | Mapping[str, Any]],
    *,
    name: str = "test",
    data_date: dt.date | None = None,
) -> Snapshot:
    """Build an in-memory snapshot from ``{"CIDR": record-or-dict}``.

    Dict values take :class:`~geofence.records.NetworkRecord` field names, with
    ``kinds`` as a list of names (``["vpn"]``). Nested networks are allowed: the
    narrowest wins.

    Raises:
        ValueError: A key is not a network.
        SourceError: A record has invalid codes.
    """
    entries = []
    for cidr, value in networks.items():
        net = ipaddress.ip_network(cidr)
        entries.append(
            RangeEntry(
                net.version, int(net.network_address), int(net.broadcast_address), _record(value)
            )
        )
    source = Source(
        info=SourceInfo(name=name, format="test", data_date=data_date or _FIXED_TIME.date()),
        read=lambda: entries,
    )
    return Snapshot.from_bytes(
        build_snapshot([source], built_at=_FIXED_TIME, force=True, strict=True, name=name),
        origin=f"<test snapshot {name}>",
    )


def make_geofence(
    networks: Mapping[str, NetworkRecord | Mapping[str, Any]],
    policy: str | Policy = "allow-all",
    **engine_options: Any,
) -> Geofence:
    """An engine over :func:`make_snapshot` data.

    Args:
        networks: As for :func:`make_snapshot`.
        policy: TOML text (anything containing ``[policy]``), a
            :class:`~geofence.policy.Policy`, or a preset name.
        engine_options: Passed to :class:`~geofence.Geofence` (``cache_size``,
            ``signals``, ``today``...).
    """
    pol: str | Policy = policy
    if isinstance(policy, str) and "[policy]" in policy:
        pol = parse_policy(policy, source="<test policy>")
    return Geofence(make_snapshot(networks), pol, **engine_options)
