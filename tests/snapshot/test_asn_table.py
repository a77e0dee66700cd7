"""The snapshot's ASN table: built apart from the records, filled into lookups, checked at open."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import itertools
import textwrap
from array import array
from collections.abc import Callable
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.engine import Geofence
from geofence.errors import SnapshotError
from geofence.policy import parse_policy
from geofence.records import NetworkRecord
from geofence.snapshot.build import build_snapshot
from geofence.snapshot.format import ARRAY_TYPES
from geofence.snapshot.invariants import Implementation, offsets_ok
from geofence.snapshot.reader import Snapshot
from geofence.snapshot.search import _CORE, make_lookup
from geofence.sources.base import RangeEntry, Source
from tests.snapshot.resum import section_spans, with_section
from tests.snapshot.test_invariants import IMPLEMENTATIONS
from tests.strategies import make_source

TODAY = dt.date(2026, 11, 27)


def _net(cidr: str, record: NetworkRecord) -> RangeEntry:
    net = ipaddress.ip_network(cidr)
    return RangeEntry(net.version, int(net.network_address), int(net.broadcast_address), record)


def _asn_source(name: str, entries: list[RangeEntry]) -> Source:
    return dataclasses.replace(make_source(name, entries), asn_table=True)


COUNTRIES = make_source(
    "countries",
    [
        _net("8.0.0.0/8", NetworkRecord(country="US")),
        _net("9.0.0.0/8", NetworkRecord(country="IR")),
        _net("2a00::/16", NetworkRecord(country="DE")),
        _net("5.0.0.0/8", NetworkRecord(country="GB", asn=64999, as_org="Stated")),
    ],
)
FIRST = _asn_source(
    "asn-first",
    [
        _net("8.8.8.0/24", NetworkRecord(asn=15169, as_org="Google LLC")),
        _net("9.9.0.0/16", NetworkRecord(asn=64600, as_org="Ünïcode Org")),
        _net("2a00:1::/32", NetworkRecord(asn=64700)),
        _net("5.5.5.0/24", NetworkRecord(asn=64800, as_org="Ignored")),
    ],
)
SECOND = _asn_source(
    "asn-second",
    [
        _net("8.8.0.0/16", NetworkRecord(asn=64601, as_org="Second")),
        _net("9.9.9.0/24", NetworkRecord(asn=64602, as_org="Loses")),
        _net("10.0.0.0/8", NetworkRecord(asn=64603, as_org="No country")),
    ],
)


def _build(*sources: Source) -> bytes:
    return build_snapshot(
        list(sources), name="asn", built_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    )


@pytest.fixture(scope="module")
def data() -> bytes:
    return _build(COUNTRIES, FIRST, SECOND)


@pytest.fixture(scope="module")
def snap(data: bytes) -> Snapshot:
    return Snapshot.from_bytes(data)


def test_round_trip_fills_lookups_from_the_table(snap: Snapshot) -> None:
    """lookup() and get() carry the ASN of the table; the first source wins per range."""
    cases = {
        "8.8.8.8": (15169, "Google LLC"),
        "8.8.9.1": (64601, "Second"),
        "9.9.9.9": (64600, "Ünïcode Org"),
        "2a00:1::5": (64700, None),
        "8.9.0.1": (None, None),
    }
    for ip, (asn, org) in cases.items():
        for record in (snap.lookup(ip).record, snap.get(ip)):
            assert record is not None
            assert (record.asn, record.as_org) == (asn, org), ip
    # A record that states its ASN keeps it; an address without a record stays without.
    assert snap.lookup("5.5.5.5").record.asn == 64999  # type: ignore[union-attr]
    assert snap.lookup("10.1.1.1").record is None
    assert snap.asn_table.find(4, int(ipaddress.ip_address("10.1.1.1"))) == (64603, "No country")


def test_asn_boundaries_do_not_multiply_the_records(snap: Snapshot) -> None:
    """The records are those of the country source alone; the ASN table is apart."""
    alone = Snapshot.from_bytes(_build(COUNTRIES))
    assert snap.records == alone.records
    assert snap.range_counts == alone.range_counts
    assert len(alone.asn_table) == 0
    assert alone.get("8.8.8.8").asn is None  # type: ignore[union-attr]
    assert snap.meta["asn"]["entries"] == len(snap.asn_table) == 6  # 64602 lost everywhere
    assert snap.meta["asn"]["v4_addresses"] == (1 << 16) + (1 << 16) + (1 << 24) + 256


def _column(data: bytes, tag: bytes) -> array[int]:
    offset, length = section_spans(data)[tag]
    out = array(ARRAY_TYPES[tag][0])
    out.frombytes(data[offset : offset + length])
    return out


def _edit(data: bytes, tag: bytes, k: int, value: int) -> bytes:
    column = _column(data, tag)
    column[k] = value
    return with_section(data, tag, column.tobytes())


def _orgs_edit(data: bytes) -> bytes:
    offset, length = section_spans(data)[b"ORGS"]
    blob = bytearray(data[offset : offset + length])
    blob[0] = 0xFF  # not UTF-8
    return with_section(data, b"ORGS", bytes(blob))


CORRUPT: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "entry id past the table": (lambda d: _edit(d, b"A4ID", 1, 99), "ASN tables"),
    "special id in the ASN partition": (lambda d: _edit(d, b"A6ID", 1, -2), "ASN tables"),
    "starts out of order": (lambda d: _edit(d, b"A4ST", 1, 0xFFFFFFF0), "ASN tables"),
    "index entry": (lambda d: _edit(d, b"A4IX", 2100, 0), "ASN tables"),
    "origin": (lambda d: _edit(d, b"A4ST", 0, 1), "do not start at address 0"),
    "organisation offset": (lambda d: _edit(d, b"ORGO", 1, 1 << 20), "offsets"),
    "offsets backwards": (lambda d: _edit(d, b"ORGO", 2, 0), "offsets"),
    "organisation bytes": (_orgs_edit, "organisation names"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_inconsistent_asn_sections_are_refused(data: bytes, case: str) -> None:
    """Checksum-valid files with broken ASN sections fail at open, naming the problem."""
    edit, words = CORRUPT[case]
    with pytest.raises(SnapshotError, match=words):
        Snapshot.from_bytes(edit(data))


_V4 = st.integers(0, (1 << 32) - 1)


@st.composite
def _disjoint(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    """Sorted, disjoint (first, last, asn) ranges (some adjacent, some with gaps between)."""
    cuts = sorted(set(draw(st.lists(_V4, min_size=2, max_size=16))))
    out = []
    for a, b in itertools.pairwise(cuts):
        if draw(st.booleans()):
            out.append((a, b - 1, draw(st.integers(1, 6))))
    return out


@settings(max_examples=60, deadline=None)
@given(_disjoint(), _disjoint(), st.lists(_V4, max_size=20))
def test_asn_lookup_equals_a_naive_oracle(
    first: list[tuple[int, int, int]], second: list[tuple[int, int, int]], probes: list[int]
) -> None:
    """Over random ranges of two ASN sources, every address gets the first covering source's ASN."""
    world = make_source("world", [RangeEntry(4, 0, (1 << 32) - 1, NetworkRecord(country="US"))])
    sources = [
        _asn_source(
            name,
            [RangeEntry(4, a, b, NetworkRecord(asn=n, as_org=f"org{n}")) for a, b, n in ranges],
        )
        for name, ranges in (("one", first), ("two", second))
    ]
    snap = Snapshot.from_bytes(_build(world, *sources))
    points = {p for a, b, _ in first + second for p in (a, b, a - 1, b + 1)} | set(probes)
    for value in sorted(p for p in points if 0 <= p < 1 << 32):
        want = next(
            (n for ranges in (first, second) for a, b, n in ranges if a <= value <= b), None
        )
        found = snap.asn_table.find(4, value)
        assert found == (None if want is None else (want, f"org{want}")), value
        record = snap.lookup(value, version=4).record  # None in the special ranges
        assert record is None or (record.asn, record.as_org) == (found or (None, None))


ASN_POLICY = parse_policy(
    textwrap.dedent(
        """
        [policy]
        id = "asn"
        default = "allow"
        [[rules]]
        id = "deny-google"
        action = "deny"
        asns = [15169]
        [[rules]]
        id = "deny-ir"
        action = "deny"
        jurisdictions = ["IR"]
        """
    )
)
COUNTRY_POLICY = parse_policy(
    '[policy]\nid = "c"\ndefault = "allow"\n[[rules]]\nid = "deny-ir"\naction = "deny"\n'
    'jurisdictions = ["IR"]\n'
)


def test_asn_rules_match_the_table_and_only_they_split_the_records(snap: Snapshot) -> None:
    """A policy with ASN rules overlays the table; one without compiles the snapshot's partition."""
    with Geofence(snap, ASN_POLICY, max_age=None, today=lambda: TODAY) as gf:
        assert gf.decide("8.8.8.8").rule_id == "deny-google"
        assert gf.decide("8.8.9.9").action.value == "allow"
        assert gf.decide("9.9.9.9").rule_id == "deny-ir"
        assert gf.decide("8.8.8.8").asn == 15169
        parts = gf._state.compiled.partitions
        assert len(parts.v4_starts) > len(snap.partitions.v4_starts)
    with Geofence(snap, COUNTRY_POLICY, max_age=None, today=lambda: TODAY) as gf:
        assert gf._state.compiled.partitions is snap.partitions


@pytest.mark.skipif(_CORE is None, reason="the compiled core is not active")
def test_asn_rule_parity_of_the_compiled_core_and_the_pure_twin(snap: Snapshot) -> None:
    """On every boundary of the ASN-overlaid partition, the compiled core answers as the twin."""
    with Geofence(snap, ASN_POLICY, max_age=None, today=lambda: TODAY) as gf:
        state = gf._state
        c = state.compiled
        twin = make_lookup(
            c.partitions, c.table, partial(gf._decide_general, state), pure=True, parsed=True
        )
        starts = list(c.partitions.v4_starts)
        six = [(h << 64) | lo for h, lo in zip(c.partitions.v6_hi, c.partitions.v6_lo, strict=True)]
        texts = [str(ipaddress.IPv4Address(v)) for s in starts for v in (s, max(s - 1, 0))]
        texts += [str(ipaddress.IPv6Address(v)) for s in six for v in (s, max(s - 1, 0))]
        for text in texts:
            assert state.decide(text) == twin(text), text


def test_asn_rules_decide_as_the_filled_records_say(snap: Snapshot) -> None:
    """Only the named AS's ranges are overlaid; every boundary decides as its filled record."""
    with Geofence(snap, ASN_POLICY, max_age=None, today=lambda: TODAY) as gf:
        asn_parts = snap.asn_table.partitions
        points = {*snap.partitions.v4_starts, *asn_parts.v4_starts}
        for value in sorted(points | {p - 1 for p in points if p}):
            ip = str(ipaddress.IPv4Address(value))
            record = snap.lookup(ip).record
            d = gf.decide(ip)
            if record is not None and record.asn == 15169:
                assert d.rule_id == "deny-google", ip
            elif record is not None and record.country == "IR":
                assert d.rule_id == "deny-ir", ip
            elif record is not None:
                assert d.action.value == "allow", ip


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_offset_checks_agree(implementation: Implementation) -> None:
    """Every implementation of the ORGO check accepts and refuses the same offsets."""
    for offsets, size, ok in (([0, 0, 3, 5], 5, True), ([0, 4, 3, 5], 5, False),
                              ([1, 3, 5], 5, False), ([0, 3, 4], 5, False)):  # fmt: skip
        column = array("I", offsets)
        assert offsets_ok(column, size, implementation=implementation) is ok
        # Opened snapshots hand memoryviews to the same checks.
        view = memoryview(column.tobytes()).cast("I")
        assert offsets_ok(view, size, implementation=implementation) is ok
