"""Checksum-valid but inconsistent tables are refused at open, by every implementation.

Every corrupt file here has a correct checksum (recomputed after the edit), so
only the structural checks of :mod:`geofence.snapshot.invariants` stand between
it and wrong answers. The compiled, numpy and standard-library implementations
run over the same cases and must agree.
"""

from __future__ import annotations

import functools
import ipaddress
from array import array
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.errors import SnapshotError
from geofence.records import NetworkRecord
from geofence.snapshot import invariants, search
from geofence.snapshot.build import build_snapshot
from geofence.snapshot.format import ARRAY_TYPES
from geofence.snapshot.invariants import Implementation, table_problem
from geofence.snapshot.partition import TUNNEL_IDS
from geofence.snapshot.reader import Snapshot
from geofence.sources.base import RangeEntry
from tests.snapshot.resum import section_spans, with_section
from tests.strategies import make_source

#: Every implementation; one that cannot run here is skipped with the reason.
IMPLEMENTATIONS = [
    pytest.param(
        name,
        id=name,
        marks=pytest.mark.skipif(
            name not in invariants.available(),
            reason=f"the {name} checks are not available (numpy missing, core not built "
            "or GEOFENCE_PURE_PYTHON set)",
        ),
    )
    for name in invariants.IMPLEMENTATIONS
]


def _entry(cidr: str, country: str) -> RangeEntry:
    net = ipaddress.ip_network(cidr)
    record = NetworkRecord(country=country)
    return RangeEntry(net.version, int(net.network_address), int(net.broadcast_address), record)


@functools.cache
def _world() -> bytes:
    """Both families, with IPv6 starts that tie on the high half (a /65 inside a /64)."""
    entries = [
        _entry("8.8.8.0/24", "US"),
        _entry("5.5.0.0/16", "UA"),
        _entry("81.2.69.0/24", "GB"),
        _entry("2a00:2::/64", "DE"),
        _entry("2a00:2:0:0:8000::/65", "FR"),
        _entry("2a00:3::/32", "IR"),
    ]
    return build_snapshot([make_source("world", entries)], name="world")


def _column(data: bytes, tag: bytes) -> array[int]:
    offset, length = section_spans(data)[tag]
    out = array(ARRAY_TYPES[tag][0])
    out.frombytes(data[offset : offset + length])
    return out


Edit = Callable[["array[int]"], None]


def _edited(tag: bytes, edit: Edit) -> bytes:
    """The world with one column edited and the checksum recomputed."""
    data = _world()
    column = _column(data, tag)
    edit(column)
    return with_section(data, tag, column.tobytes())


def _rotate(column: array[int]) -> None:
    """Rotate every start but the first (address 0 stays, as the reader checks)."""
    column[1:] = column[2:] + column[1:2]


def _swap(i: int) -> Edit:
    def edit(column: array[int]) -> None:
        column[i], column[i + 1] = column[i + 1], column[i]

    return edit


def _shift(i: int, delta: int) -> Edit:
    def edit(column: array[int]) -> None:
        column[i] += delta

    return edit


def _copy_previous(i: int) -> Edit:
    def edit(column: array[int]) -> None:
        column[i] = column[i - 1]

    return edit


def _assign(i: int, value: int) -> Edit:
    def edit(column: array[int]) -> None:
        column[i] = value

    return edit


def _tie() -> int:
    """Index of an IPv6 segment (past address 0) whose high half equals the next one's."""
    hi = _column(_world(), b"V6HI")
    return next(i for i in range(len(hi) - 1) if hi[i] == hi[i + 1] and hi[i])


def _step() -> int:
    """Index of an IPv6 segment whose high half is below the next one's."""
    hi = _column(_world(), b"V6HI")
    return next(i for i in range(len(hi) - 1) if hi[i] < hi[i + 1])


def _busy_bucket(tag: bytes) -> int:
    """A /16 bucket past the first whose index entry is past the first segment."""
    index = _column(_world(), tag)
    return next(p for p in range(1, 65536) if index[p] > 1)


#: name -> (tag, edit, fragment of the refusal).
CORRUPT: dict[str, tuple[bytes, Callable[[], Edit], str]] = {
    "v4_rotated": (b"V4ST", lambda: _rotate, "IPv4 starts are not strictly"),
    "v4_swapped": (b"V4ST", lambda: _swap(2), "IPv4 starts are not strictly"),
    "v4_duplicate": (b"V4ST", lambda: _copy_previous(3), "IPv4 starts are not strictly"),
    "v6_high_swapped": (b"V6HI", lambda: _swap(_step()), "IPv6 starts are not strictly"),
    "v6_low_swapped_on_tie": (b"V6LO", lambda: _swap(_tie()), "IPv6 starts are not strictly"),
    "v4_id_past_records": (b"V4ID", lambda: _assign(1, 99), "IPv4 ids"),
    "v4_undefined_negative_id": (b"V4ID", lambda: _assign(1, -12), "IPv4 ids"),
    "v4_tunnel_id": (b"V4ID", lambda: _assign(1, min(TUNNEL_IDS.values())), "IPv4 ids"),
    "v6_id_past_records": (b"V6ID", lambda: _assign(1, 99), "IPv6 ids"),
    "v6_id_below_tunnels": (b"V6ID", lambda: _assign(1, -20), "IPv6 ids"),
    "v4_index_low": (b"V4IX", lambda: _shift(_busy_bucket(b"V4IX"), -1), "IPv4 /16 index"),
    "v4_index_high": (b"V4IX", lambda: _shift(_busy_bucket(b"V4IX"), 1), "IPv4 /16 index"),
    "v6_index_high": (b"V6IX", lambda: _shift(_busy_bucket(b"V6IX"), 1), "IPv6 /16 index"),
    "v4_index_sentinel": (b"V4IX", lambda: _shift(65536, -1), "IPv4 /16 index"),
    "v4_index_first": (b"V4IX", lambda: _assign(0, 1), "IPv4 /16 index"),
    "v4_index_past_end": (b"V4IX", lambda: _assign(7, 10**6), "points past the end"),
    "v6_index_negative": (b"V6IX", lambda: _assign(7, -1), "points past the end"),
}


def _tables(data: bytes) -> tuple[tuple[array[int], ...], tuple[array[int], ...]]:
    v4 = tuple(_column(data, tag) for tag in (b"V4ST", b"V4ID", b"V4IX"))
    v6 = tuple(_column(data, tag) for tag in (b"V6HI", b"V6LO", b"V6ID", b"V6IX"))
    return v4, v6


def _problem(data: bytes, implementation: Implementation) -> str | None:
    v4, v6 = _tables(data)
    records = len(Snapshot.from_bytes(_world()).records)
    return table_problem(v4, v6, records, implementation=implementation)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_checksum_valid_corrupt_tables_are_refused_at_open(name: str) -> None:
    """Opening refuses the file with a SnapshotError naming the broken invariant."""
    tag, edit, fragment = CORRUPT[name]
    data = _edited(tag, edit())
    with pytest.raises(SnapshotError, match="corrupt tables") as info:
        Snapshot.from_bytes(data, origin="edited.gfs")
    assert fragment in str(info.value)
    assert "edited.gfs" in str(info.value)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_each_implementation_names_the_broken_invariant(
    name: str, implementation: Implementation
) -> None:
    """Every implementation gives the same verdict, in the same words, on every corruption."""
    tag, edit, fragment = CORRUPT[name]
    problem = _problem(_edited(tag, edit()), implementation)
    assert problem is not None
    assert fragment in problem


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_consistent_tables_pass(implementation: Implementation) -> None:
    """The builder's output passes, and verify() (the standard-library path) agrees."""
    assert _problem(_world(), implementation) is None
    Snapshot.from_bytes(_world()).verify()


def test_forcing_a_missing_implementation_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forcing numpy or the core where it is missing raises; the default takes the next one."""
    stdlib = invariants._checker("stdlib")
    monkeypatch.setattr(invariants, "_checker", lambda name: stdlib if name == "stdlib" else None)
    v4, v6 = _tables(_world())
    for name in ("numpy", "compiled"):
        with pytest.raises(ModuleNotFoundError, match=name):
            table_problem(v4, v6, 1, implementation=name)  # type: ignore[arg-type]
    assert invariants.available() == ("stdlib",)
    assert table_problem(v4, v6, 10) is None  # type: ignore[arg-type]


_TAGS = (b"V4ST", b"V4ID", b"V4IX", b"V6HI", b"V6LO", b"V6ID", b"V6IX")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tag=st.sampled_from(_TAGS),
    position=st.integers(min_value=0, max_value=65536),
    value=st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
def test_any_accepted_edit_leaves_every_segment_findable(
    tag: bytes, position: int, value: int
) -> None:
    """One value written anywhere: the file is refused, or every segment is found again.

    Finding each segment by its own start means no search runs on inconsistent
    arrays; both implementations must give the same verdict.
    """
    data = _world()
    column = _column(data, tag)
    i = position % len(column)
    low, high = (0, 2**32 - 1) if column.typecode == "I" else (0, 2**64 - 1)
    if column.typecode in "IQ":
        value = min(max(value + column[i], low), high)
    column[i] = value
    edited = with_section(data, tag, column.tobytes())
    verdicts = {name: _problem(edited, name) for name in invariants.available()}
    assert len(set(verdicts.values())) == 1, verdicts
    try:
        snap = Snapshot.from_bytes(edited)
    except SnapshotError:
        return  # refused: by these checks, or by an earlier one (the start at address 0)
    assert verdicts["stdlib"] is None
    for version in (4, 6):
        for index, (first, _, rid) in enumerate(snap.ranges(version)):
            assert snap.lookup_id(version, first) == (index, rid)


@pytest.mark.skipif(
    "compiled" not in invariants.available(), reason="the compiled core is not active"
)
def test_compiled_checks_refuse_malformed_columns_safely() -> None:
    """Wrong shapes give a code, wrong item sizes a TypeError: nothing is read out of bounds."""
    problem = search.core_function("partition_problem")
    assert problem is not None
    # Two segments, [0, 9] and [10, top]: every bucket after the first ends in the second.
    starts, ids, index = array("I", [0, 10]), array("i", [-1, -1]), array("i", [0] + [1] * 65536)
    assert problem(starts, None, ids, index, 0, 1 << 1, 16) == 0
    assert problem(starts, None, ids, index[:100], 0, 1 << 1, 16) == 1  # index too short
    assert problem(starts, None, ids[:1], index, 0, 1 << 1, 16) == 1  # lengths differ
    assert problem(array("I"), None, array("i"), index, 0, 1 << 1, 16) == 1  # no segment
    assert problem(starts, array("Q", [0]), ids, index, 0, 1 << 1, 16) == 1  # low too short
    assert problem(starts, None, array("i", [-1, -(2**31)]), index, 0, 1 << 1, 16) == 4
    with pytest.raises(TypeError, match="4- or 8-byte"):
        problem(array("H", [0, 10]), None, ids, index, 0, 1 << 1, 16)
    with pytest.raises(TypeError, match="4-byte"):
        problem(starts, None, array("q", [-1, -1]), index, 0, 1 << 1, 16)
    with pytest.raises(ValueError, match="shift"):
        problem(starts, None, ids, index, 0, 1 << 1, 64)
