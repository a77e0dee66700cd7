from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.errors import SourceError
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.sources.csvranges import cidr_list_source, csv_ranges_source

from ._helpers import disjoint, entries, ipv4_networks, ipv6_networks, spans, write_text

# --- CSV ranges -------------------------------------------------------------------


def test_csv_ranges_ipv4_and_ipv6(tmp_path: Path) -> None:
    """Rows of both families read as inclusive ranges with their country."""
    path = write_text(
        tmp_path / "country.csv",
        "1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.3.255,CN\n2001:200::,2001:200:ffff:ffff::,JP\n",
    )
    source = csv_ranges_source(path)
    assert spans(source) == [
        (4, "1.0.0.0", "1.0.0.255"),
        (4, "1.0.1.0", "1.0.3.255"),
        (6, "2001:200::", "2001:200:ffff:ffff::"),
    ]
    assert [e.record.country for e in entries(source)] == ["AU", "CN", "JP"]


def test_csv_ranges_info(tmp_path: Path) -> None:
    """The default name is the file stem; sha256 and the given date are recorded."""
    path = write_text(tmp_path / "dbip-country-lite.csv", "1.0.0.0,1.0.0.255,AU\n")
    info = csv_ranges_source(path, data_date=dt.date(2024, 5, 1), license="CC-BY-4.0").info
    assert info.name == "dbip-country-lite"
    assert info.format == "csv"
    assert info.data_date == dt.date(2024, 5, 1)
    assert info.version == "2024-05-01"
    assert info.license == "CC-BY-4.0"
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_csv_ranges_header_comments_blank_lines(tmp_path: Path) -> None:
    """A header row, comments, blank lines and a byte-order mark are skipped."""
    path = tmp_path / "r.csv"
    path.write_bytes(
        "\ufeffstart,end,country,subdivision\n# comment\n\n1.2.3.0,1.2.3.255,UA,UA-43\r\n".encode()
    )
    (got,) = entries(csv_ranges_source(path))
    assert got.record == NetworkRecord(country="UA", subdivision="UA-43")


def test_csv_ranges_bare_subdivision_is_completed(tmp_path: Path) -> None:
    """A bare subdivision code '43' with country UA becomes 'UA-43'."""
    path = write_text(tmp_path / "r.csv", "1.2.3.0,1.2.3.255,UA,43\n")
    (got,) = entries(csv_ranges_source(path))
    assert got.record.subdivision == "UA-43"


def test_csv_ranges_non_cidr_range(tmp_path: Path) -> None:
    """A range that is not a CIDR block is kept exactly."""
    path = write_text(tmp_path / "r.csv", "10.0.0.3,10.0.0.9,DE\n")
    assert spans(csv_ranges_source(path)) == [(4, "10.0.0.3", "10.0.0.9")]


def test_csv_ranges_placeholder_country_skipped(tmp_path: Path) -> None:
    """Rows with country ZZ or empty state nothing and are skipped."""
    path = write_text(tmp_path / "r.csv", "1.0.0.0,1.0.0.255,ZZ\n1.0.1.0,1.0.1.255,\n")
    assert entries(csv_ranges_source(path)) == []


def test_csv_ranges_ipv4_mapped_is_ipv4(tmp_path: Path) -> None:
    """A range written in IPv4-mapped IPv6 form is stated as IPv4."""
    path = write_text(tmp_path / "r.csv", "::ffff:1.2.3.0,::ffff:1.2.3.255,FR\n")
    assert spans(csv_ranges_source(path)) == [(4, "1.2.3.0", "1.2.3.255")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.2.3.9,1.2.3.0,FR\n", r"r.csv:1: start '1.2.3.9' is after end"),
        ("1.2.3.0,::1,FR\n", r"r.csv:1: start '1.2.3.0' is IPv4 but end '::1' is IPv6"),
        ("1.2.3.0,1.2.3.255\n", r"r.csv:1: expected 3 or 4 fields"),
        ("1.2.3.0,1.2.3.255,FR,FR-75,x\n", r"r.csv:1: expected 3 or 4 fields"),
        ("1.0.0.0,1.0.0.1,FR\n1.2.3,1.2.3.255,FR\n", r"r.csv:2: start: .*not a valid"),
        ("01.2.3.0,1.2.3.255,FR\n", r"r.csv:1: start: .*leading zero"),
        ("1.2.3.0,1.2.3.255,fra\n", r"r.csv:1: country 'fra' is not an ISO 3166-1"),
        ("1.2.3.0,1.2.3.255,fr\n", r"r.csv:1: country 'fr' is not an ISO 3166-1"),
        ("1.2.3.0,1.2.3.255,UA,RU-43\n", r"r.csv:1: subdivision 'RU-43' does not belong"),
        ("1.2.3.0,1.2.3.255,UA,UA_43\n", r"r.csv:1: subdivision 'UA_43' is not an ISO 3166-2"),
        ('1.2.3.0,"1.2.3.255,FR\n', r"r.csv:1: malformed CSV"),
    ],
)
def test_csv_ranges_malformed(tmp_path: Path, text: str, message: str) -> None:
    """Malformed rows raise SourceError naming the file, line and problem."""
    path = write_text(tmp_path / "r.csv", text)
    with pytest.raises(SourceError, match=message):
        entries(csv_ranges_source(path))


def test_csv_ranges_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 raises SourceError."""
    path = tmp_path / "r.csv"
    path.write_bytes(b"1.2.3.0,1.2.3.255,FR\n\xff\xfe\n")
    with pytest.raises(SourceError, match="not valid UTF-8"):
        entries(csv_ranges_source(path))


def test_csv_ranges_missing_file(tmp_path: Path) -> None:
    """A missing file raises SourceError."""
    with pytest.raises(SourceError, match="no such file"):
        csv_ranges_source(tmp_path / "missing.csv")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    """A directory is refused."""
    with pytest.raises(SourceError, match="not a regular file"):
        csv_ranges_source(tmp_path)


# --- CIDR lists -------------------------------------------------------------------


def test_cidr_list_kinds_provider_country(tmp_path: Path) -> None:
    """Each prefix gets the given kinds, provider and default country."""
    path = write_text(tmp_path / "vpn.txt", "192.0.2.0/24\n2001:db8::/32\n198.51.100.7\n")
    source = cidr_list_source(path, kinds=NetworkKind.VPN, provider="Example VPN", country="NL")
    assert source.info.name == "vpn"
    assert source.info.format == "cidr"
    assert spans(source) == [
        (4, "192.0.2.0", "192.0.2.255"),
        (6, "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
        (4, "198.51.100.7", "198.51.100.7"),
    ]
    expected = NetworkRecord(country="NL", provider="Example VPN", kinds=NetworkKind.VPN)
    assert all(e.record == expected for e in entries(source))


def test_cidr_list_comments_and_per_line_country(tmp_path: Path) -> None:
    """Comments (# and ;), blank lines, a header and per-line countries are understood."""
    path = write_text(
        tmp_path / "list.txt",
        "network,country\n"
        "# a comment\n"
        "\n"
        "192.0.2.0/24, FR  # inline comment\n"
        "198.51.100.0/24 ; SBL123\n"
        "203.0.113.0/24 DE\n",
    )
    got = entries(cidr_list_source(path, kinds=NetworkKind.HOSTING))
    assert [e.record.country for e in got] == ["FR", None, "DE"]
    assert all(e.record.kinds == NetworkKind.HOSTING for e in got)


def test_cidr_list_states_nothing_skipped(tmp_path: Path) -> None:
    """Without kinds, provider or country a line states nothing and is skipped."""
    path = write_text(tmp_path / "list.txt", "192.0.2.0/24\n198.51.100.0/24,FR\n")
    got = entries(cidr_list_source(path))
    assert [e.record for e in got] == [NetworkRecord(country="FR")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "192.0.2.1/24\n",
            r"l.txt:1: '192.0.2.1/24' has host bits set \(the network is 192.0.2.0/24\)",
        ),
        ("192.0.2.0/33\n", r"l.txt:1: prefix length /33 is longer than IPv4 allows"),
        ("192.0.2.0/x\n", r"l.txt:1: prefix length 'x' is not a number"),
        ("2001:db8::/129\n", r"l.txt:1: prefix length /129"),
        ("192.0.2.0/24,FR,extra\n", r"l.txt:1: expected a prefix and an optional country"),
        ("192.0.2.0/24\nexample.com\n", r"l.txt:2: .*hostnames are not resolved"),
        ("fe80::1%eth0\n", r"l.txt:1: .*zone id"),
        ("192.0.2.0/24,XX\n", r"l.txt:1: country 'XX' is not an assigned"),
    ],
)
def test_cidr_list_malformed(tmp_path: Path, text: str, message: str) -> None:
    """Malformed lines raise SourceError naming the file, line and problem."""
    path = write_text(tmp_path / "l.txt", text)
    with pytest.raises(SourceError, match=message):
        entries(cidr_list_source(path, kinds=NetworkKind.VPN))


def test_cidr_list_bad_default_country(tmp_path: Path) -> None:
    """A default country that is not a code is refused when the source is described."""
    path = write_text(tmp_path / "l.txt", "192.0.2.0/24\n")
    with pytest.raises(SourceError, match="country 'France'"):
        cidr_list_source(path, country="France")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(ipv4_networks(min_length=0), ipv6_networks()), max_size=30))
def test_cidr_list_round_trip(
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> None:
    """Networks written one per line read back as exactly their ranges, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_text(Path(tmp) / "l.txt", "".join(f"{n}\n" for n in networks))
        got = entries(cidr_list_source(path, kinds=NetworkKind.TOR))
    assert [(e.version, e.first, e.last) for e in got] == [
        (n.version, int(n.network_address), int(n.broadcast_address)) for n in networks
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(ipv4_networks(), ipv6_networks()), max_size=20))
def test_csv_ranges_round_trip(
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> None:
    """Ranges written as start,end,country read back unchanged."""
    kept = disjoint(networks)
    text = "".join(f"{n.network_address},{n.broadcast_address},SE\n" for n in kept)
    with tempfile.TemporaryDirectory() as tmp:
        got = entries(csv_ranges_source(write_text(Path(tmp) / "r.csv", text)))
    assert [(e.version, e.first, e.last) for e in got] == [
        (n.version, int(n.network_address), int(n.broadcast_address)) for n in kept
    ]
