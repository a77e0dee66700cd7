"""Fixtures for the audit tests: a file-backed snapshot, its policy and engine."""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
from pathlib import Path
from typing import Any

import pytest

from geofence.engine import Geofence
from geofence.kinds import kinds_from_names
from geofence.policy.parse import parse_policy
from geofence.records import NetworkRecord
from geofence.snapshot.build import build_snapshot
from geofence.sources.base import RangeEntry, Source, SourceInfo

#: The networks of the audit test data: every action of POLICY, several countries,
#: subdivisions, ASNs and network kinds.
NETWORKS: dict[str, dict[str, object]] = {
    "5.0.0.0/8": {"country": "IR", "asn": 58224},
    "31.0.0.0/16": {"country": "RU", "subdivision": "UA-43", "asn": 201776},
    "41.0.0.0/8": {"country": "CU", "asn": 27725},
    "8.8.8.0/24": {"country": "US", "asn": 15169, "kinds": ["hosting"]},
    "23.0.0.0/8": {"country": "US", "asn": 7922},
    "46.0.0.0/8": {"country": "DE", "asn": 3320},
    "185.0.0.0/16": {"country": "NL", "asn": 9009, "kinds": ["vpn"]},
    "171.25.193.0/24": {"country": "SE", "asn": 198093, "kinds": ["tor"]},
    "2a00::/16": {"country": "DE", "asn": 3320},
    "2001:4860::/32": {"country": "US", "asn": 15169, "kinds": ["hosting"]},
}

POLICY = """
[policy]
id = "audit-test"
version = "2026-01-01"
on_unresolved = "review"

[[rules]]
id = "sanctioned"
action = "deny"
jurisdictions = ["IR", "CU", "UA-43"]

[[rules]]
id = "anonymisers"
action = "challenge"
kinds = ["vpn", "tor"]

[[rules]]
id = "de-route"
action = "route:eu-tier"
jurisdictions = ["DE"]
"""

_BUILT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def snapshot_bytes(networks: dict[str, dict[str, object]], name: str = "audit-test") -> bytes:
    """A snapshot file's bytes for ``{"CIDR": record fields}``."""
    entries = []
    for cidr, fields in networks.items():
        net = ipaddress.ip_network(cidr)
        values: dict[str, Any] = dict(fields)
        kinds = kinds_from_names(values.pop("kinds", []))
        record = NetworkRecord(kinds=kinds, **values)
        entries.append(
            RangeEntry(net.version, int(net.network_address), int(net.broadcast_address), record)
        )
    source = Source(
        info=SourceInfo(name=name, format="test", data_date=_BUILT.date()),
        read=lambda: entries,
    )
    return build_snapshot([source], built_at=_BUILT, force=True, name=name)


@pytest.fixture(scope="session")
def snapshot_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The audit test snapshot written to a file (engines pickle it by reference)."""
    path = tmp_path_factory.mktemp("audit-data") / "audit.gfs"
    path.write_bytes(snapshot_bytes(NETWORKS))
    return path


@pytest.fixture(scope="session")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The audit test policy as a TOML file."""
    path = tmp_path_factory.mktemp("audit-policy") / "policy.toml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="session")
def engine(snapshot_file: Path) -> Geofence:
    """An engine over the audit test data and policy."""
    return Geofence(snapshot_file, parse_policy(POLICY, source="<audit test policy>"))


#: Client addresses of :func:`engine_log` (the order of its lines) and its junk lines.
ENGINE_LOG_IPS = [
    "5.1.2.3",
    "31.0.0.9",
    "41.2.3.4",
    "8.8.8.8",
    "23.4.5.6",
    "46.1.1.1",
    "185.0.2.2",
    "171.25.193.20",
    "2a00::1",
    "2001:4860::8",
    "10.0.0.1",
    "99.9.9.9",
]
ENGINE_LOG_JUNK = 3


def engine_log_clients(n: int = 12_000) -> list[str]:
    """The client of each decided line of the engine-recipe log."""
    r = random.Random(12)
    return [r.choice(ENGINE_LOG_IPS) for _ in range(n)]


@pytest.fixture(scope="session")
def engine_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An nginx log for the engine recipes: 12,000 decided lines and 3 junk lines."""
    path = tmp_path_factory.mktemp("engine-log") / "access.log"
    with path.open("w") as fh:
        for i, ip in enumerate(engine_log_clients()):
            fh.write(
                f"{ip} - - [01/Mar/2026:10:{i // 600 % 60:02d}:{i % 60:02d} +0000] "
                f'"GET /v1/chat HTTP/1.1" 200 {i} "-" "client/{i % 9}" "-"\n'
            )
            if i % 5000 == 17:
                fh.write("\x00\x01 not a log line\n")
    return path
