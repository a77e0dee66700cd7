"""Tests of geofence.snapshot.build: the merge precedence and the build guards."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.addr import parse_address
from geofence.errors import SnapshotError, SourceError
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.snapshot.build import build_snapshot, compile_snapshot, write_atomic
from geofence.snapshot.reader import GAP, Snapshot
from geofence.sources.base import RangeEntry, Source
from tests.strategies import addresses, make_source, source_sets, top_of

BUILT_AT = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

# The oracle's own copy of the documented vocabulary (build.py's module docstring).
_FIELDS = (
    "country",  # first: the location rule compares against the merged country
    "subdivision",
    "registered_country",
    "city",
    "asn",
    "as_org",
    "provider",
    "latitude",
    "longitude",
    "accuracy_km",
)
_LOCATION = frozenset({"subdivision", "city", "latitude", "longitude", "accuracy_km"})


def _net(text: str) -> tuple[int, int, int]:
    """(version, first, last) of a CIDR text."""
    import ipaddress

    net = ipaddress.ip_network(text)
    return net.version, int(net.network_address), int(net.broadcast_address)


def _entry(cidr: str, **fields: object) -> RangeEntry:
    version, first, last = _net(cidr)
    return RangeEntry(version, first, last, NetworkRecord(**fields))  # type: ignore[arg-type]


def _build(sources: Sequence[Source], **kwargs: object) -> Snapshot:
    data = build_snapshot(sources, built_at=BUILT_AT, **kwargs)  # type: ignore[arg-type]
    return Snapshot.from_bytes(data)


# -- the naive oracle --------------------------------------------------------------------------


def _narrowest(entries: Sequence[RangeEntry], version: int, value: int) -> NetworkRecord | None:
    """Rule 1: the smallest entry of one source covering the address; later entries win ties."""
    best: RangeEntry | None = None
    for entry in entries:
        covers = entry.version == version and entry.first <= value <= entry.last
        if covers and (best is None or entry.last - entry.first <= best.last - best.first):
            best = entry
    return best.record if best is not None else None


def _oracle(
    sources: Sequence[tuple[str, Sequence[RangeEntry]]],
    priority: Mapping[str, Sequence[str]],
    version: int,
    value: int,
) -> NetworkRecord | None:
    """The merged record for one address, computed the slow, obvious way (rules 1-5)."""
    covering = [
        (name, rec)
        for name, entries in sources
        if (rec := _narrowest(entries, version, value)) is not None
    ]
    if not covering:
        return None
    by_name = dict(covering)
    default = [name for name, _ in covering]
    merged: dict[str, object] = {}
    for field in _FIELDS:
        listed = [n for n in priority.get(field, ()) if n in by_name]
        order = listed + [n for n in default if n not in listed]
        for name in order:
            rec = by_name[name]
            value_ = getattr(rec, field)
            if value_ is None:
                continue
            if field in _LOCATION:
                own = rec.country or (rec.subdivision.split("-")[0] if rec.subdivision else None)
                if own is not None and merged.get("country") not in (None, own):
                    continue
            merged[field] = value_
            break
    kinds = NetworkKind.UNKNOWN
    for _, rec in covering:
        kinds |= rec.kinds
    return NetworkRecord(kinds=kinds, sources=tuple(default), **merged)  # type: ignore[arg-type]


def _sample_points(
    entry_lists: Sequence[Sequence[RangeEntry]], extra: Sequence[tuple[int, int]]
) -> set[tuple[int, int]]:
    """Edges of every entry (first-1, first, last, last+1), both ends of both spaces, extras."""
    points = {(4, 0), (4, top_of(4)), (6, 0), (6, top_of(6)), *extra}
    for entries in entry_lists:
        for e in entries:
            for value in (e.first - 1, e.first, e.last, e.last + 1):
                if 0 <= value <= top_of(e.version):
                    points.add((e.version, value))
    return points


def _assert_partition(snap: Snapshot) -> None:
    """Snapshot.ranges of each family is a partition of the whole space, in order."""
    for version in (4, 6):
        segments = list(snap.ranges(version))
        assert segments[0][0] == 0
        assert segments[-1][1] == top_of(version)
        for (_, last, _), (first, _, _) in pairwise(segments):
            assert first == last + 1
        assert all(first <= last for first, last, _ in segments)
        assert all(rid < len(snap.records) for _, _, rid in segments)


@st.composite
def _priorities(draw: st.DrawFn, names: Sequence[str]) -> dict[str, list[str]]:
    """A random field_priority naming some fields and some sources in some order."""
    result: dict[str, list[str]] = {}
    for field in draw(st.lists(st.sampled_from(_FIELDS), unique=True, max_size=4)):
        order = draw(st.permutations(names))
        result[field] = order[: draw(st.integers(1, len(order)))]
    return result


# -- properties --------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), source_sets(), st.lists(addresses(), max_size=8))
def test_lookup_equals_naive_oracle(
    data: st.DataObject, entry_lists: list[list[RangeEntry]], extra: list[tuple[int, int]]
) -> None:
    """Over random overlapping sources, every sampled lookup equals the naive oracle."""
    names = [f"s{i}" for i in range(len(entry_lists))]
    priority = data.draw(st.none() | _priorities(names))
    sources = [make_source(n, e) for n, e in zip(names, entry_lists, strict=True)]
    snap = _build(sources, field_priority=priority, force=True)
    _assert_partition(snap)
    snap.verify()
    assert len(set(snap.records)) == len(snap.records)  # records are interned
    named = list(zip(names, entry_lists, strict=True))
    for version, value in sorted(_sample_points(entry_lists, extra)):
        result = snap.lookup(value, version=version)
        addr = parse_address(value, version=version)
        assert result.address == addr
        assert result.first <= addr.value <= result.last
        if addr.special is not None:
            assert result.record is None
            continue
        expected = _oracle(named, priority or {}, addr.version, addr.value)
        assert result.record == expected, (version, value)
        assert (result.record_id == GAP) == (expected is None)


@settings(max_examples=30, deadline=None)
@given(source_sets(max_sources=3))
def test_build_is_reproducible(entry_lists: list[list[RangeEntry]]) -> None:
    """The same sources and built_at give byte-identical snapshots."""

    def once() -> bytes:
        sources = [make_source(f"s{i}", e) for i, e in enumerate(entry_lists)]
        return build_snapshot(sources, force=True, built_at=BUILT_AT)

    assert once() == once()


# -- precedence examples -----------------------------------------------------------------------


def test_narrowest_range_wins_within_a_source() -> None:
    """Within a source a /24 inside a /16 wins over the /16 for its addresses only."""
    src = make_source(
        "a",
        [_entry("8.8.0.0/16", country="US"), _entry("8.8.8.0/24", country="DE")],
    )
    snap = _build([src])
    assert snap.lookup("8.8.8.8").record == NetworkRecord(country="DE", sources=("a",))
    assert snap.lookup("8.8.9.1").record == NetworkRecord(country="US", sources=("a",))
    assert snap.lookup("8.8.7.255").record == NetworkRecord(country="US", sources=("a",))


def test_later_entry_wins_a_tie_within_a_source() -> None:
    """Two identical ranges in one source: the later entry wins."""
    src = make_source("a", [_entry("8.8.8.0/24", country="US"), _entry("8.8.8.0/24", country="DE")])
    assert _build([src]).lookup("8.8.8.8").record == NetworkRecord(country="DE", sources=("a",))


def test_first_source_wins_per_field_and_kinds_are_unioned() -> None:
    """Fields come from the first source stating them; kinds are unioned; sources listed."""
    a = make_source("a", [_entry("8.8.8.0/24", country="US", kinds=NetworkKind.HOSTING)])
    b = make_source("b", [_entry("8.8.0.0/16", country="DE", asn=15169, kinds=NetworkKind.VPN)])
    snap = _build([a, b])
    assert snap.lookup("8.8.8.8").record == NetworkRecord(
        country="US",
        asn=15169,
        kinds=NetworkKind.HOSTING | NetworkKind.VPN,
        sources=("a", "b"),
    )
    assert snap.lookup("8.8.9.9").record == NetworkRecord(
        country="DE", asn=15169, kinds=NetworkKind.VPN, sources=("b",)
    )


def test_field_priority_overrides_order() -> None:
    """field_priority reorders sources for one field only; provenance keeps the default order."""
    a = make_source("a", [_entry("8.8.8.0/24", country="US", asn=1, as_org="A")])
    b = make_source("b", [_entry("8.8.8.0/24", country="DE", asn=2, as_org="B")])
    snap = _build([a, b], field_priority={"asn": ["b", "a"]})
    assert snap.lookup("8.8.8.8").record == NetworkRecord(
        country="US", asn=2, as_org="A", sources=("a", "b")
    )
    assert snap.meta["field_priority"] == {"asn": ["b", "a"]}


def test_field_priority_falls_back_to_unlisted_sources() -> None:
    """A source not named in field_priority still supplies the field when the listed ones are silent."""
    a = make_source("a", [_entry("8.8.8.0/24", asn=15169)])
    b = make_source("b", [_entry("8.8.0.0/16", country="US")])
    snap = _build([a, b], field_priority={"asn": ["b"]})
    # b covers 8.8.8.8 but states no ASN: a's ASN is still used, as where b is absent.
    assert snap.lookup("8.8.8.8").record == NetworkRecord(
        country="US", asn=15169, sources=("a", "b")
    )


def test_location_fields_follow_the_merged_country() -> None:
    """A subdivision or city from a source that disagrees on the country is not mixed in."""
    a = make_source("a", [_entry("8.8.8.0/24", country="RU")])
    b = make_source(
        "b",
        [_entry("8.8.8.0/24", country="UA", subdivision="UA-43", city="Simferopol", asn=1)],
    )
    snap = _build([a, b])
    assert snap.lookup("8.8.8.8").record == NetworkRecord(country="RU", asn=1, sources=("a", "b"))
    flipped = _build([a, b], field_priority={"country": ["b"]})
    assert flipped.lookup("8.8.8.8").record == NetworkRecord(
        country="UA", subdivision="UA-43", city="Simferopol", asn=1, sources=("a", "b")
    )


def test_subdivision_implies_its_country() -> None:
    """A source stating UA-43 without a country is not mixed into a record whose country is RU."""
    a = make_source("a", [_entry("8.8.8.0/24", country="RU")])
    b = make_source("b", [_entry("8.8.8.0/24", subdivision="UA-43", city="Simferopol")])
    assert _build([a, b]).lookup("8.8.8.8").record == NetworkRecord(
        country="RU", sources=("a", "b")
    )
    # Alone (no merged country), or agreeing with the merged country, it is kept.
    assert _build([b]).lookup("8.8.8.8").record == NetworkRecord(
        subdivision="UA-43", city="Simferopol", sources=("b",)
    )
    c = make_source("c", [_entry("8.8.8.0/24", country="UA")])
    assert _build([c, b]).lookup("8.8.8.8").record == NetworkRecord(
        country="UA", subdivision="UA-43", city="Simferopol", sources=("c", "b")
    )


def test_location_fields_from_a_source_without_country() -> None:
    """A source stating only a city (no country) contributes it under the merged country."""
    a = make_source("a", [_entry("8.8.8.0/24", country="US")])
    b = make_source("b", [_entry("8.8.8.0/24", city="Mountain View", latitude=37.4)])
    assert _build([a, b]).lookup("8.8.8.8").record == NetworkRecord(
        country="US", city="Mountain View", latitude=37.4, sources=("a", "b")
    )


def test_stated_provenance_is_replaced() -> None:
    """A source's own record.sources is ignored; the builder names the source."""
    src = make_source("a", [_entry("8.8.8.0/24", country="US", sources=("forged",))])
    assert _build([src]).lookup("8.8.8.8").record == NetworkRecord(country="US", sources=("a",))


def test_both_families_are_merged_separately() -> None:
    """IPv4 and IPv6 entries of one source land in their own family only."""
    src = make_source("a", [_entry("8.8.8.0/24", country="US"), _entry("2a00::/16", country="DE")])
    snap = _build([src])
    assert snap.lookup("8.8.8.8").record == NetworkRecord(country="US", sources=("a",))
    assert snap.lookup("2a00::1").record == NetworkRecord(country="DE", sources=("a",))
    assert snap.lookup("::808:808").record is None  # IPv4-compatible is not IPv4


def test_special_addresses_have_no_record_even_if_covered() -> None:
    """Data covering private or documentation space is hidden behind the special category."""
    src = make_source("a", [_entry("0.0.0.0/0", country="US"), _entry("::/0", country="DE")])
    snap = _build([src])
    for text in ("10.0.0.1", "192.0.2.1", "::ffff:127.0.0.1", "fe80::1", "::1"):
        result = snap.lookup(text)
        assert result.record is None
        assert result.address.special is not None
    assert snap.lookup("8.8.8.8").record == NetworkRecord(country="US", sources=("a",))
    assert snap.lookup("2a00::1").record == NetworkRecord(country="DE", sources=("a",))


# -- guards and errors -------------------------------------------------------------------------


@pytest.mark.parametrize("sources", [[], [make_source("a", [])]])
def test_empty_build_is_refused(sources: list[Source]) -> None:
    """A build that covers no address is refused without force."""
    with pytest.raises(SnapshotError, match="empty"):
        build_snapshot(sources, built_at=BUILT_AT)


def test_force_allows_an_empty_build() -> None:
    """force=True writes an empty snapshot that answers 'unknown' everywhere."""
    snap = Snapshot.from_bytes(build_snapshot([], force=True, built_at=BUILT_AT))
    assert snap.records == ()
    assert snap.lookup("8.8.8.8").record is None
    assert snap.lookup("2a00::1").record_id == GAP
    _assert_partition(snap)


def _blocks(count: int) -> Source:
    return make_source("a", [_entry(f"8.{i}.0.0/24", country="US") for i in range(count)])


def test_shrink_guard_against_previous(tmp_path: Path) -> None:
    """A build covering far less than the previous file is refused unless forced."""
    previous = tmp_path / "previous.gfs"
    write_atomic(build_snapshot([_blocks(10)], built_at=BUILT_AT), previous)
    with pytest.raises(SnapshotError, match="shrank"):
        build_snapshot([_blocks(2)], previous=previous, built_at=BUILT_AT)
    assert build_snapshot([_blocks(2)], previous=previous, force=True, built_at=BUILT_AT)
    assert build_snapshot([_blocks(2)], previous=previous, max_shrink=0.9, built_at=BUILT_AT)
    assert build_snapshot([_blocks(6)], previous=previous, built_at=BUILT_AT)
    assert build_snapshot([_blocks(20)], previous=previous, built_at=BUILT_AT)


def test_shrink_guard_with_unreadable_previous(tmp_path: Path) -> None:
    """A previous file that is not a snapshot is reported as a SnapshotError."""
    previous = tmp_path / "previous.gfs"
    previous.write_bytes(b"not a snapshot")
    with pytest.raises(SnapshotError):
        build_snapshot([_blocks(2)], previous=previous, built_at=BUILT_AT)


@pytest.mark.parametrize(
    ("priority", "message"),
    [
        ({"colour": ["a"]}, "unknown field"),
        ({"kinds": ["a"]}, "unknown field"),
        ({"sources": ["a"]}, "unknown field"),
        ({"asn": ["a", "nope"]}, "unknown sources"),
    ],
)
def test_bad_field_priority_is_refused(priority: dict[str, list[str]], message: str) -> None:
    """field_priority naming an unknown (or unmerged) field or an unknown source is refused."""
    with pytest.raises(SnapshotError, match=message):
        build_snapshot([_blocks(1)], field_priority=priority, built_at=BUILT_AT)


def test_duplicate_source_names_are_refused() -> None:
    """Two sources with the same name would make provenance ambiguous."""
    with pytest.raises(SnapshotError, match="unique"):
        build_snapshot([_blocks(1), _blocks(2)], built_at=BUILT_AT)


@pytest.mark.parametrize(
    "fields",
    [
        {"country": "ua"},
        {"country": "UKR"},
        {"country": "U"},
        {"country": ""},
        {"registered_country": "xx"},
        {"country": "UA", "subdivision": "43"},
        {"country": "UA", "subdivision": "ua-43"},
        {"country": "UA", "subdivision": "UA43"},
    ],
)
def test_invalid_codes_in_a_source_are_skipped_or_refused(fields: dict[str, object]) -> None:
    """A malformed ISO 3166 code skips the entry (counted, with an example); strict refuses."""
    src = make_source("bad", [_entry("8.8.8.0/24", **fields), _entry("9.9.9.0/24", country="US")])
    result = compile_snapshot([src], built_at=BUILT_AT)
    assert result.skipped.total("bad") == 1
    (field,) = result.skipped.counts["bad"]
    assert "ISO 3166" in result.skipped.examples["bad"][field][0]
    snap = Snapshot.from_bytes(result.data)
    assert snap.lookup("8.8.8.8").record is None
    assert snap.lookup("9.9.9.9").record is not None
    assert snap.meta["skipped"] == {"bad": {field: 1}}
    with pytest.raises(SourceError, match="ISO 3166"):
        build_snapshot([src], built_at=BUILT_AT, strict=True)


@pytest.mark.parametrize(
    ("version", "first", "last"),
    [(4, 10, 9), (4, 0, 1 << 32), (4, -1, 5), (6, 0, 1 << 128), (5, 0, 1)],
)
def test_invalid_ranges_are_refused(version: int, first: int, last: int) -> None:
    """Reversed, out-of-space or wrong-family entries fail the build with SourceError."""
    src = make_source("bad", [RangeEntry(version, first, last, NetworkRecord(country="US"))])
    with pytest.raises(SourceError, match="invalid range"):
        build_snapshot([src], built_at=BUILT_AT)


def test_metadata_records_provenance() -> None:
    """META names the sources, the oldest data date, the UTC build time and counts."""
    a = make_source("a", [_entry("8.8.8.0/24", country="US")], data_date=dt.date(2025, 3, 1))
    b = make_source("b", [_entry("2a00::/16", country="DE")], data_date=dt.date(2025, 2, 1))
    when = dt.datetime(2025, 3, 2, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    snap = Snapshot.from_bytes(build_snapshot([a, b], built_at=when, name="test"))
    assert snap.meta["name"] == "test"
    assert snap.data_date == dt.date(2025, 2, 1)
    assert snap.built_at == dt.datetime(2025, 3, 2, 10, 0, 0, tzinfo=dt.UTC)
    assert [s.name for s in snap.sources] == ["a", "b"]
    assert snap.sources == (a.info, b.info)
    assert snap.meta["stats"]["v4_ranges"] == 1
    assert snap.meta["stats"]["v6_ranges"] == 1


def test_different_built_at_changes_identity() -> None:
    """The build time is part of the file, hence of the snapshot id."""
    first = build_snapshot([_blocks(1)], built_at=BUILT_AT)
    second = build_snapshot([_blocks(1)], built_at=BUILT_AT + dt.timedelta(seconds=1))
    assert first != second
    assert Snapshot.from_bytes(first).snapshot_id != Snapshot.from_bytes(second).snapshot_id


def test_progress_is_reported() -> None:
    """The progress callback hears about reading, merging and encoding."""
    messages: list[str] = []
    build_snapshot([_blocks(1)], built_at=BUILT_AT, progress=messages.append)
    text = "\n".join(messages)
    assert "reading a" in text
    assert "merging IPv4" in text
    assert "encoding" in text


def test_write_atomic_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    """write_atomic writes the bytes, replaces an existing file and cleans up."""
    target = tmp_path / "snap.gfs"
    target.write_bytes(b"old")
    write_atomic(b"new contents", target)
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["snap.gfs"]


@pytest.mark.parametrize("shared", [True, False])
def test_many_entries_with_fresh_or_shared_record_objects(shared: bool) -> None:
    """Past the identity cache's trial (65,536 entries) records still map to the right ids."""
    import ipaddress

    us, de = NetworkRecord(country="US"), NetworkRecord(country="DE")

    def record(i: int) -> NetworkRecord:
        if shared:
            return us if i % 3 else de
        return NetworkRecord(country="US" if i % 3 else "DE")

    base = 20 << 24  # 70,000 consecutive /24s from 20.0.0.0
    entries = [
        RangeEntry(4, base + (i << 8), base + (i << 8) + 255, record(i)) for i in range(70_000)
    ]
    result = compile_snapshot([make_source("many", entries)], built_at=BUILT_AT)
    snap = Snapshot.from_bytes(result.data)
    for i in (0, 1, 3, 65_535, 65_536, 65_537, 69_999):
        rec = snap.lookup(str(ipaddress.IPv4Address(base + (i << 8) + 1))).record
        assert rec is not None
        assert rec.country == ("US" if i % 3 else "DE")
    assert result.stats.records == 2
