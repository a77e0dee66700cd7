from __future__ import annotations

import pytest

from geofence.errors import SourceError
from geofence.records import NetworkRecord
from geofence.sources._common import (
    country_code,
    entry,
    is_header,
    parse_network,
    slug,
    subdivision_code,
)


@pytest.mark.parametrize("value", [None, "", "ZZ", "EU", "AP", " ZZ "])
def test_placeholder_countries_are_none(value: str | None) -> None:
    """Empty values and placeholders (ZZ, EU, AP) mean no country."""
    assert country_code(value, "w") is None


def test_country_codes() -> None:
    """Assigned codes and XK pass; lower case passes only when folding."""
    assert country_code("UA", "w") == "UA"
    assert country_code("XK", "w") == "XK"
    assert country_code("ua", "w", fold_case=True) == "UA"
    with pytest.raises(SourceError, match="w: country 'ua' is not an ISO 3166-1 alpha-2"):
        country_code("ua", "w")
    with pytest.raises(SourceError, match="not a string"):
        country_code(7, "w")


def test_subdivision_codes() -> None:
    """Full codes are checked against the country; bare codes are completed when allowed."""
    assert subdivision_code("UA-43", "UA", "w") == "UA-43"
    assert subdivision_code("43", "UA", "w", allow_bare=True) == "UA-43"
    assert subdivision_code("43", None, "w", allow_bare=True) is None
    assert subdivision_code("", "UA", "w") is None
    assert subdivision_code("us-ca", "US", "w", fold_case=True) == "US-CA"
    with pytest.raises(SourceError, match="is not an ISO 3166-2 code"):
        subdivision_code("43", "UA", "w")
    with pytest.raises(SourceError, match="does not belong"):
        subdivision_code("RU-43", "UA", "w")


def test_parse_network() -> None:
    """Prefixes and bare addresses parse to inclusive integer ranges."""
    assert parse_network("10.0.0.0/8", "w") == (4, 10 << 24, (11 << 24) - 1)
    assert parse_network("0.0.0.0/0", "w") == (4, 0, (1 << 32) - 1)
    assert parse_network("::/0", "w") == (6, 0, (1 << 128) - 1)
    assert parse_network("10.0.0.1", "w") == (4, (10 << 24) + 1, (10 << 24) + 1)
    with pytest.raises(SourceError, match="is an address, expected a CIDR prefix"):
        parse_network("10.0.0.1", "w", allow_address=False)
    with pytest.raises(SourceError, match="prefix length '-1'"):
        parse_network("10.0.0.0/-1", "w")


def test_entry_unwraps_ipv4_mapped() -> None:
    """An IPv4-mapped IPv6 range is stated as IPv4; other IPv6 ranges are kept."""
    record = NetworkRecord(country="FR")
    mapped = (0xFFFF << 32) | 0x01020300
    assert entry(6, mapped, mapped + 255, record).version == 4
    assert entry(6, mapped, mapped + 255, record).first == 0x01020300
    assert entry(6, 1 << 120, (1 << 120) + 5, record).version == 6


def test_header_and_slug() -> None:
    """Header detection tells words from addresses; slugs are lower-case and hyphenated."""
    assert is_header(["start_ip", "end_ip"])
    assert not is_header(["1.2.3.0", "1.2.3.255"])
    assert not is_header(["abcd::1"])
    assert slug("GeoLite2-Country") == "geolite2-country"
    assert slug("ipinfo lite.mmdb") == "ipinfo-lite-mmdb"
