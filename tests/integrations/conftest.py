"""Fixtures of the integration tests: a tiny snapshot, a policy covering every action."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterator

import pytest

from geofence.engine import Geofence
from geofence.integrations.audit import flush_audit_queue
from geofence.policy import parse_policy
from geofence.records import NetworkRecord
from geofence.signals.base import Signal
from geofence.snapshot.build import build_snapshot
from geofence.snapshot.reader import Snapshot
from geofence.sources.base import RangeEntry, Source, SourceInfo


def pytest_configure(config: pytest.Config) -> None:
    """Starlette's TestClient asks for "httpx2" on newer releases; these tests use httpx."""
    config.addinivalue_line("filterwarnings", "ignore:.*httpx2.*")


#: One address per action of POLICY (and its country in the test snapshot).
ADDR = {
    "allow": "1.2.3.4",  # US
    "deny": "2.2.2.2",  # CU
    "route": "3.3.3.3",  # DE
    "challenge": "4.4.4.4",  # FR
    "review": "5.5.5.5",  # GB
    "shadow": "6.6.6.6",  # IT
    "allow6": "2600::1",  # US
    "deny6": "2a00::1",  # CU
    "route6": "2a01::1",  # DE
}

POLICY = """
[policy]
id = "test-integrations"
version = "2026-01-01"
default = "allow"
on_unknown = "allow"
on_reserved = "allow"

[[rules]]
id = "deny-cu"
action = "deny"
jurisdictions = ["CU"]

[[rules]]
id = "route-de"
action = "route:eu-tier"
jurisdictions = ["DE"]

[[rules]]
id = "challenge-fr"
action = "challenge"
jurisdictions = ["FR"]

[[rules]]
id = "review-gb"
action = "review"
jurisdictions = ["GB"]

[[rules]]
id = "shadow-it"
action = "deny"
shadow = true
jurisdictions = ["IT"]
"""

#: A stricter policy for per-route tests: denies the US as well.
STRICT_POLICY = """
[policy]
id = "test-strict"
default = "allow"

[[rules]]
id = "deny-us-cu"
action = "deny"
jurisdictions = ["US", "CU"]
"""


def _entry(cidr: str, country: str) -> RangeEntry:
    net = ipaddress.ip_network(cidr)
    first, last = int(net.network_address), int(net.broadcast_address)
    return RangeEntry(net.version, first, last, NetworkRecord(country=country))


_ENTRIES = (
    _entry("1.0.0.0/8", "US"),
    _entry("2.0.0.0/8", "CU"),
    _entry("3.0.0.0/8", "DE"),
    _entry("4.0.0.0/8", "FR"),
    _entry("5.0.0.0/8", "GB"),
    _entry("6.0.0.0/8", "IT"),
    _entry("2600::/16", "US"),
    _entry("2a00::/16", "CU"),
    _entry("2a01::/16", "DE"),
)


def snapshot_bytes() -> bytes:
    """The tiny test snapshot as file bytes."""
    source = Source(info=SourceInfo(name="test", format="test"), read=lambda: _ENTRIES)
    return build_snapshot([source], force=True)


def make_snapshot() -> Snapshot:
    """The tiny test snapshot (built in memory)."""
    return Snapshot.from_bytes(snapshot_bytes())


@pytest.fixture(scope="session")
def snapshot() -> Snapshot:
    """The tiny test snapshot."""
    return make_snapshot()


@pytest.fixture(scope="session")
def engine(snapshot: Snapshot) -> Iterator[Geofence]:
    """An engine with POLICY over the test snapshot."""
    with Geofence(snapshot, parse_policy(POLICY)) as g:
        yield g


@pytest.fixture(scope="session")
def strict_engine(snapshot: Snapshot) -> Iterator[Geofence]:
    """An engine with STRICT_POLICY over the test snapshot."""
    with Geofence(snapshot, parse_policy(STRICT_POLICY)) as g:
        yield g


class AuditCapture:
    """Caplog for audit lines: reading ``records`` first waits for the audit queue."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    @property
    def records(self) -> list[logging.LogRecord]:
        """The records captured so far, after every queued audit record was handled."""
        assert flush_audit_queue(), "the audit queue did not drain"
        return self.caplog.records

    @property
    def text(self) -> str:
        """The captured text, after the audit queue drained."""
        assert flush_audit_queue(), "the audit queue did not drain"
        return self.caplog.text


@pytest.fixture
def audit_caplog(caplog: pytest.LogCaptureFixture) -> AuditCapture:
    """Caplog capturing the geofence.audit logger at INFO (audit lines come from a queue)."""
    caplog.set_level(logging.INFO, logger="geofence.audit")
    flush_audit_queue()  # nothing of an earlier test arrives in this one
    caplog.clear()
    return AuditCapture(caplog)


class RecordingProvider:
    """A signal provider with a sync and an async collect; records which one ran."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(
        self, addr: object, record: object, context: object, ip_only: object
    ) -> tuple[tuple[Signal, ...], bool]:
        self.calls.append("sync")
        return (Signal(code="seen_before", weight=0.0),), False

    async def acollect(
        self, addr: object, record: object, context: object, ip_only: object
    ) -> tuple[tuple[Signal, ...], bool]:
        self.calls.append("async")
        return (Signal(code="seen_before", weight=0.0),), False
