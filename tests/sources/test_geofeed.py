from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from geofence.errors import SourceError
from geofence.records import NetworkRecord
from geofence.sources.geofeed import geofeed_source

from ._helpers import entries, spans, write_text

FEED = """\
# RFC 8805 geofeed
192.0.2.0/24,US,US-CA,Los Angeles,90001
198.51.100.0/25,gb,gb-eng,London,
2001:db8:1::/48,DE,,,
203.0.113.5,FR,FR-IDF,"Paris, 1er",
2001:db8:2::/48,,,,
192.0.2.128/25,NL,NL-NH,Amsterdam,,future-field
"""


def test_geofeed_fields(tmp_path: Path) -> None:
    """Country, ISO 3166-2 region and city are read; postal codes and extra fields are ignored."""
    source = geofeed_source(write_text(tmp_path / "feed.csv", FEED))
    assert spans(source) == [
        (4, "192.0.2.0", "192.0.2.255"),
        (4, "198.51.100.0", "198.51.100.127"),
        (6, "2001:db8:1::", "2001:db8:1:ffff:ffff:ffff:ffff:ffff"),
        (4, "203.0.113.5", "203.0.113.5"),
        (4, "192.0.2.128", "192.0.2.255"),
    ]
    assert [e.record for e in entries(source)] == [
        NetworkRecord(country="US", subdivision="US-CA", city="Los Angeles"),
        NetworkRecord(country="GB", subdivision="GB-ENG", city="London"),
        NetworkRecord(country="DE"),
        NetworkRecord(country="FR", subdivision="FR-IDF", city="Paris, 1er"),
        NetworkRecord(country="NL", subdivision="NL-NH", city="Amsterdam"),
    ]


def test_geofeed_short_lines(tmp_path: Path) -> None:
    """Trailing fields may be left out."""
    path = write_text(tmp_path / "feed.csv", "192.0.2.0/24,JP\n192.0.2.0/25,JP,JP-13\n")
    assert [e.record for e in entries(geofeed_source(path))] == [
        NetworkRecord(country="JP"),
        NetworkRecord(country="JP", subdivision="JP-13"),
    ]


def test_geofeed_info(tmp_path: Path) -> None:
    """The default name is the file stem; the format carries no date, so it is given."""
    path = write_text(tmp_path / "example-geofeed.csv", FEED)
    info = geofeed_source(path, data_date=dt.date(2024, 5, 2), url="https://example.net/g").info
    assert (info.name, info.format, info.data_date, info.url) == (
        "example-geofeed",
        "geofeed",
        dt.date(2024, 5, 2),
        "https://example.net/g",
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("192.0.2.0/24,US,CA,Los Angeles,", r"f.csv:1: region 'CA' is not an ISO 3166-2 code"),
        (
            "192.0.2.0/24,US,CA-ON,Toronto,",
            r"f.csv:1: region 'CA-ON' does not belong to country 'US'",
        ),
        ("192.0.2.0/24,,US-CA,,", r"f.csv:1: region 'US-CA' is given without a country"),
        ("192.0.2.0/24,USA,,,", r"f.csv:1: alpha2code 'USA'"),
        ("192.0.2.1/24,US,,,", r"f.csv:1: '192.0.2.1/24' has host bits set"),
        ("not-a-prefix,US,,,", r"f.csv:1: "),
        ('192.0.2.0/24,US,"US-CA', r"f.csv:1: malformed CSV"),
    ],
)
def test_geofeed_malformed(tmp_path: Path, line: str, message: str) -> None:
    """Malformed entries raise SourceError naming the file, line and problem."""
    path = write_text(tmp_path / "f.csv", line + "\n")
    with pytest.raises(SourceError, match=message):
        entries(geofeed_source(path))
