from __future__ import annotations

from pathlib import Path

import pytest

from geofence.errors import SourceError
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.sources.relay import APPLE_RELAY_URL, relay_source

from ._helpers import entries, spans, write_text

EGRESS = """\
172.224.226.0/27,GB,GB-EN,London,
172.224.226.32/31,US,US-CA,Los Angeles,
2a02:26f7:b3c0:4000::/64,AE,AE-DU,Dubai,
2a02:26f7:b3c0:4001::/64,UA,UA-43,,
"""


def test_relay_ranges_keep_location_and_are_relay(tmp_path: Path) -> None:
    """Egress ranges keep country/region/city and are marked RELAY with Apple as provider."""
    source = relay_source(write_text(tmp_path / "egress-ip-ranges.csv", EGRESS))
    assert spans(source)[0] == (4, "172.224.226.0", "172.224.226.31")
    records = [e.record for e in entries(source)]
    provider = "Apple iCloud Private Relay"
    assert records == [
        NetworkRecord(
            country="GB",
            subdivision="GB-EN",
            city="London",
            provider=provider,
            kinds=NetworkKind.RELAY,
        ),
        NetworkRecord(
            country="US",
            subdivision="US-CA",
            city="Los Angeles",
            provider=provider,
            kinds=NetworkKind.RELAY,
        ),
        NetworkRecord(
            country="AE",
            subdivision="AE-DU",
            city="Dubai",
            provider=provider,
            kinds=NetworkKind.RELAY,
        ),
        NetworkRecord(
            country="UA", subdivision="UA-43", provider=provider, kinds=NetworkKind.RELAY
        ),
    ]
    assert not any(r.kinds & NetworkKind.VPN for r in records)


def test_relay_info(tmp_path: Path) -> None:
    """The source is named icloud-private-relay and points at Apple's list by default."""
    info = relay_source(write_text(tmp_path / "e.csv", EGRESS)).info
    assert (info.name, info.format, info.url) == ("icloud-private-relay", "relay", APPLE_RELAY_URL)


def test_relay_malformed(tmp_path: Path) -> None:
    """A malformed egress line raises SourceError naming the line."""
    path = write_text(tmp_path / "e.csv", EGRESS + "172.224.226.0/33,GB,GB-EN,London,\n")
    with pytest.raises(SourceError, match=r"e.csv:5: prefix length /33"):
        entries(relay_source(path))
