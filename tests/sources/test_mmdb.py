from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import itertools
import tempfile
from pathlib import Path
from typing import Any

import maxminddb
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from geofence.errors import SourceError
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.sources.mmdb import map_mmdb_record, mmdb_source

from ._helpers import disjoint, entries, ipv4_networks, ipv6_networks, spans, write_mmdb

UA_CITY: dict[str, Any] = {
    "city": {"geoname_id": 694423, "names": {"en": "Sevastopol", "ru": "Севастополь"}},
    "continent": {"code": "EU", "names": {"en": "Europe"}},
    "country": {"iso_code": "UA", "names": {"en": "Ukraine"}},
    "location": {"latitude": 44.6, "longitude": 33.5, "accuracy_radius": 50},
    "registered_country": {"iso_code": "UA"},
    "subdivisions": [{"iso_code": "40", "names": {"en": "Sevastopol"}}],
}


def test_country_layout_ipv4_tree(tmp_path: Path) -> None:
    """A GeoIP2 Country file in an IPv4 tree gives country and registered country."""
    path = write_mmdb(
        tmp_path / "c.mmdb",
        [
            (
                "1.2.3.0/24",
                {"country": {"iso_code": "FR"}, "registered_country": {"iso_code": "DE"}},
            ),
            ("5.6.0.0/16", {"country": {"iso_code": "NL"}}),
        ],
        ip_version=4,
    )
    got = entries(mmdb_source(path))
    assert spans(mmdb_source(path)) == [
        (4, "1.2.3.0", "1.2.3.255"),
        (4, "5.6.0.0", "5.6.255.255"),
    ]
    assert got[0].record == NetworkRecord(country="FR", registered_country="DE")
    assert got[1].record == NetworkRecord(country="NL")


def test_source_info_from_metadata(tmp_path: Path) -> None:
    """SourceInfo takes its name from database_type, dates from build_epoch, and the file hash."""
    path = write_mmdb(
        tmp_path / "x.mmdb",
        [("1.0.0.0/8", {"country": {"iso_code": "AU"}})],
        database_type="GeoLite2-Country",
    )
    source = mmdb_source(path, license="CC-BY-SA-4.0", attribution="MaxMind", url="https://x")
    info = source.info
    assert info.name == "geolite2-country"
    assert info.format == "mmdb"
    assert info.version == "2024-05-01"
    assert info.data_date == dt.date(2024, 5, 1)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (info.license, info.attribution, info.url) == ("CC-BY-SA-4.0", "MaxMind", "https://x")
    assert mmdb_source(path, name="mine").info.name == "mine"


def test_city_layout_full_subdivision_code(tmp_path: Path) -> None:
    """A City record maps subdivision '40' of country UA to 'UA-40', plus city and location."""
    path = write_mmdb(
        tmp_path / "city.mmdb", [("2.3.4.0/24", UA_CITY)], database_type="GeoIP2-City"
    )
    (got,) = entries(mmdb_source(path))
    assert got.record == NetworkRecord(
        country="UA",
        subdivision="UA-40",
        registered_country="UA",
        city="Sevastopol",
        latitude=44.6,
        longitude=33.5,
        accuracy_km=50,
    )


def test_asn_layout(tmp_path: Path) -> None:
    """An ASN record gives asn and as_org."""
    path = write_mmdb(
        tmp_path / "asn.mmdb",
        [
            (
                "8.8.8.0/24",
                {"autonomous_system_number": 15169, "autonomous_system_organization": "GOOGLE"},
            )
        ],
        database_type="GeoLite2-ASN",
    )
    (got,) = entries(mmdb_source(path))
    assert got.record == NetworkRecord(asn=15169, as_org="GOOGLE")


def test_anonymous_ip_layout(tmp_path: Path) -> None:
    """Anonymous IP flags map to network kinds; a record with no flag set is skipped."""
    path = write_mmdb(
        tmp_path / "anon.mmdb",
        [
            (
                "10.0.0.0/24",
                {"is_anonymous": True, "is_anonymous_vpn": True, "is_hosting_provider": True},
            ),
            ("10.0.1.0/24", {"is_anonymous": True, "is_public_proxy": True}),
            ("10.0.2.0/24", {"is_anonymous": True, "is_residential_proxy": True}),
            ("10.0.3.0/24", {"is_anonymous": True, "is_tor_exit_node": True}),
            ("10.0.4.0/24", {"is_anonymous": False}),
        ],
        database_type="GeoIP2-Anonymous-IP",
    )
    kinds = [e.record.kinds for e in entries(mmdb_source(path))]
    assert kinds == [
        NetworkKind.VPN | NetworkKind.HOSTING,
        NetworkKind.PUBLIC_PROXY,
        NetworkKind.RESIDENTIAL_PROXY,
        NetworkKind.TOR,
    ]


def test_enterprise_layout_is_the_union(tmp_path: Path) -> None:
    """An Enterprise record states location, ASN from traits and kinds from traits together."""
    record = dict(UA_CITY)
    record["traits"] = {
        "autonomous_system_number": 64500,
        "autonomous_system_organization": "Example Hosting",
        "is_anonymous_vpn": True,
        "user_type": "hosting",
    }
    path = write_mmdb(
        tmp_path / "ent.mmdb", [("2.3.4.0/24", record)], database_type="GeoIP2-Enterprise"
    )
    (got,) = entries(mmdb_source(path))
    assert got.record.country == "UA"
    assert got.record.subdivision == "UA-40"
    assert got.record.asn == 64500
    assert got.record.as_org == "Example Hosting"
    assert got.record.kinds == NetworkKind.VPN | NetworkKind.HOSTING


def test_dbip_city_lite_subdivision_name_is_mapped(tmp_path: Path) -> None:
    """DB-IP City Lite subdivisions with only a name are mapped to ISO 3166-2 ('Kyiv City')."""
    record = {
        "city": {"names": {"en": "Kyiv"}},
        "country": {"iso_code": "UA", "is_in_european_union": False},
        "location": {"latitude": 50.45, "longitude": 30.52},
        "subdivisions": [{"names": {"en": "Kyiv City"}}],
    }
    path = write_mmdb(
        tmp_path / "dbip.mmdb", [("2.3.4.0/24", record)], database_type="DBIP-City-Lite"
    )
    source = mmdb_source(path)
    assert source.info.name == "dbip-city-lite"
    (got,) = entries(source)
    assert got.record == NetworkRecord(
        country="UA", subdivision="UA-30", city="Kyiv", latitude=50.45, longitude=30.52
    )


def test_ipinfo_lite_flat_layout(tmp_path: Path) -> None:
    """IPinfo Lite's flat keys give country_code, 'AS15169' as 15169 and as_name."""
    record = {
        "asn": "AS15169",
        "as_name": "Google LLC",
        "as_domain": "google.com",
        "country_code": "US",
        "country": "United States",
        "continent_code": "NA",
        "continent": "North America",
    }
    path = write_mmdb(
        tmp_path / "ipinfo.mmdb", [("8.8.8.0/24", record)], database_type="ipinfo lite.mmdb"
    )
    (got,) = entries(mmdb_source(path))
    assert got.record == NetworkRecord(country="US", asn=15169, as_org="Google LLC")


def test_ipinfo_country_asn_layout() -> None:
    """IPinfo's older country_asn layout keeps the code in 'country' and is understood."""
    record = {"country": "DE", "country_name": "Germany", "asn": "AS3320", "as_name": "DTAG"}
    assert map_mmdb_record(record, "x") == NetworkRecord(country="DE", asn=3320, as_org="DTAG")


def test_ipv6_tree_ipv4_data_is_stated_as_ipv4(tmp_path: Path) -> None:
    """IPv4 data under ::/96 of an IPv6 tree is emitted once, as version 4, beside IPv6 data."""
    path = write_mmdb(
        tmp_path / "v6.mmdb",
        [
            ("1.2.3.0/24", {"country": {"iso_code": "UA"}}),
            ("2a00::/16", {"country": {"iso_code": "DE"}}),
        ],
    )
    assert spans(mmdb_source(path)) == [
        (4, "1.2.3.0", "1.2.3.255"),
        (6, "2a00::", "2a00:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ]


def test_nested_networks_split_around_the_inner_one(tmp_path: Path) -> None:
    """A network nested in another splits the outer one; every address has one answer."""
    path = write_mmdb(
        tmp_path / "nested.mmdb",
        [
            ("1.2.0.0/16", {"country": {"iso_code": "FR"}}),
            ("1.2.3.0/24", {"country": {"iso_code": "BE"}}),
            ("2a00::/16", {"country": {"iso_code": "DE"}}),
            ("2a00:1::/32", {"country": {"iso_code": "AT"}}),
        ],
    )
    got = entries(mmdb_source(path))
    inner = [e for e in got if e.record.country in ("BE", "AT")]
    assert [(e.version, e.first, e.last) for e in inner] == [
        (4, int(ipaddress.IPv4Address("1.2.3.0")), int(ipaddress.IPv4Address("1.2.3.255"))),
        (
            6,
            int(ipaddress.IPv6Address("2a00:1::")),
            int(ipaddress.IPv6Address("2a00:1:ffff:ffff:ffff:ffff:ffff:ffff")),
        ),
    ]
    for version, outer in ((4, "1.2.0.0/16"), (6, "2a00::/16")):
        net = ipaddress.ip_network(outer)
        pieces = sorted((e.first, e.last) for e in got if e.version == version)
        assert pieces[0][0] == int(net.network_address)
        assert pieces[-1][1] == int(net.broadcast_address)
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(pieces))


def test_alias_subtrees_are_not_duplicated(tmp_path: Path) -> None:
    """Data under ::ffff:0:0/96, 2001::/32 and 2002::/16 is skipped; IPv4 comes once from ::/96."""
    fr = {"country": {"iso_code": "FR"}}
    path = write_mmdb(
        tmp_path / "alias.mmdb",
        [
            ("1.2.3.0/24", fr),
            ("::ffff:1.2.3.0/120", fr),
            ("2001:0:102:300::/56", fr),
            ("2002:102:300::/40", fr),
            ("2a00::/16", fr),
        ],
    )
    with maxminddb.open_database(str(path)) as reader:
        assert len(list(reader)) == 5  # the aliases really are in the file
    assert spans(mmdb_source(path)) == [
        (4, "1.2.3.0", "1.2.3.255"),
        (6, "2a00::", "2a00:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ]


def test_range_over_a_tunnel_prefix_is_split(tmp_path: Path) -> None:
    """An IPv6 network that contains 2001::/32 and 2002::/16 is stated without them."""
    path = write_mmdb(tmp_path / "wide.mmdb", [("2000::/7", {"country": {"iso_code": "US"}})])
    assert spans(mmdb_source(path)) == [
        (6, "2000::", "2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        (6, "2001:1::", "2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        (6, "2003::", "21ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ]


def test_placeholder_countries_mean_no_country(tmp_path: Path) -> None:
    """Country 'ZZ' and an empty record state nothing and are skipped."""
    path = write_mmdb(
        tmp_path / "zz.mmdb",
        [("1.0.0.0/24", {"country": {"iso_code": "ZZ"}}), ("1.0.1.0/24", {})],
    )
    assert entries(mmdb_source(path)) == []


def test_missing_file() -> None:
    """A missing file raises SourceError naming it."""
    with pytest.raises(SourceError, match=r"no-such\.mmdb: no such file"):
        mmdb_source("no-such.mmdb")


def test_truncated_file(tmp_path: Path) -> None:
    """A truncated MMDB (metadata lost) raises SourceError when described."""
    path = write_mmdb(tmp_path / "t.mmdb", [("1.2.3.0/24", {"country": {"iso_code": "FR"}})])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="not a valid MaxMind DB"):
        mmdb_source(path)


def test_not_an_mmdb(tmp_path: Path) -> None:
    """A text file is not a MaxMind DB."""
    path = tmp_path / "x.mmdb"
    path.write_text("hello\n")
    with pytest.raises(SourceError, match="not a valid MaxMind DB"):
        mmdb_source(path)


def test_corrupt_search_tree(tmp_path: Path) -> None:
    """Corrupt tree nodes raise SourceError while reading, not a reader exception."""
    path = write_mmdb(
        tmp_path / "t.mmdb", [("1.2.3.0/24", {"country": {"iso_code": "FR"}})], ip_version=4
    )
    data = bytearray(path.read_bytes())
    data[0:6] = b"\xff" * 6
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="corrupt search tree"):
        entries(mmdb_source(path))


def test_corrupt_data_section(tmp_path: Path) -> None:
    """Undecodable record data raises SourceError while reading."""
    path = write_mmdb(
        tmp_path / "t.mmdb", [("1.2.3.0/24", {"country": {"iso_code": "FR"}})], ip_version=4
    )
    data = bytearray(path.read_bytes())
    at = data.find(b"FR")
    data[at : at + 2] = b"\xff\xff"
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="corrupt"):
        entries(mmdb_source(path))


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"country": {"iso_code": "usa"}}, "country.iso_code 'usa'"),
        ({"country": {"iso_code": "QQ"}}, "not an assigned ISO 3166-1 code"),
        ({"country": 7}, "neither a map nor a code"),
        ({"subdivisions": {"iso_code": "40"}}, "subdivisions .* is not a list"),
        (
            {"country": {"iso_code": "UA"}, "subdivisions": [{"iso_code": "RU-40"}]},
            "does not belong to country 'UA'",
        ),
        ({"location": {"latitude": 91.0, "longitude": 0.0}}, "location.latitude"),
        ({"autonomous_system_number": "ASX"}, "not an AS number"),
        ({"autonomous_system_number": 1 << 33}, "outside 0.."),
        ({"is_anonymous_vpn": "yes"}, "is not a boolean"),
        ({"traits": []}, "traits .* is not a map"),
        ({"city": {"names": {"en": 5}}}, "city.names.en"),
    ],
)
def test_bad_record_values(tmp_path: Path, record: dict[str, Any], message: str) -> None:
    """A bad value raises SourceError naming the file, the network and the key."""
    path = write_mmdb(tmp_path / "bad.mmdb", [("1.2.3.0/24", record)], ip_version=4)
    with pytest.raises(SourceError, match=rf"bad.mmdb: network 1\.2\.3\.0/24: .*{message}"):
        entries(mmdb_source(path))


def test_record_that_is_not_a_map(tmp_path: Path) -> None:
    """A record that is not a map (a bare string) raises SourceError."""
    path = write_mmdb(tmp_path / "s.mmdb", [("1.2.3.0/24", "FR")], ip_version=4)
    with pytest.raises(SourceError, match="record is a str, expected a map"):
        entries(mmdb_source(path))


def test_read_twice_gives_the_same_entries(tmp_path: Path) -> None:
    """read() can be called more than once."""
    path = write_mmdb(tmp_path / "c.mmdb", [("1.2.3.0/24", {"country": {"iso_code": "FR"}})])
    source = mmdb_source(path)
    assert entries(source) == entries(source)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.one_of(ipv4_networks(), ipv6_networks()), min_size=1, max_size=12),
    st.sampled_from([4, 6]),
)
def test_round_trip_disjoint_networks(
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network], ip_version: int
) -> None:
    """Disjoint networks written with distinct ASNs read back as exactly those ranges."""
    kept = [n for n in disjoint(networks) if ip_version == 6 or n.version == 4]
    assume(kept)
    expected = sorted(
        (n.version, int(n.network_address), int(n.broadcast_address), 64512 + i)
        for i, n in enumerate(kept)
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = write_mmdb(
            Path(tmp) / "p.mmdb",
            [(str(n), {"autonomous_system_number": 64512 + i}) for i, n in enumerate(kept)],
            ip_version=ip_version,
        )
        got = entries(mmdb_source(path))
    # The tree may state a network as several adjacent pieces: merge per ASN.
    merged: list[tuple[int, int, int, int]] = []
    for e in sorted(got, key=lambda e: (e.version, e.first)):
        asn = e.record.asn
        assert asn is not None
        if (
            merged
            and merged[-1][0] == e.version
            and merged[-1][3] == asn
            and (merged[-1][2] + 1 == e.first)
        ):
            merged[-1] = (e.version, merged[-1][1], e.last, asn)
        else:
            merged.append((e.version, e.first, e.last, asn))
    assert merged == expected
