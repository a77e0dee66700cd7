"""The RECS decoder: column-wise checks refuse what the format forbids, and builds equal records."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.errors import SnapshotError
from geofence.records import NetworkRecord
from geofence.snapshot.build import _record_row
from geofence.snapshot.format import RECORD_FIELDS
from geofence.snapshot.recs import decode_records
from tests.strategies import network_records

SOURCES = ("a", "b", "c")
INDEX = {name: i for i, name in enumerate(SOURCES)}


def _rows(records: list[NetworkRecord]) -> list[list[Any]]:
    """The rows the builder writes, through JSON as the reader sees them."""
    rows: list[list[Any]] = json.loads(json.dumps([_record_row(r, INDEX) for r in records]))
    return rows


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(network_records(), st.lists(st.sampled_from(SOURCES), max_size=3)),
        max_size=30,
    )
)
def test_decoded_records_equal_the_written_ones(
    drawn: list[tuple[NetworkRecord, list[str]]],
) -> None:
    """Records built column-wise equal the originals field for field (and as values)."""
    records = [r.with_sources(tuple(sources)) for r, sources in drawn]
    decoded = decode_records(_rows(records), SOURCES, "t.gfs")
    assert decoded == tuple(records)
    for got, want in zip(decoded, records, strict=True):
        assert type(got) is NetworkRecord
        assert dataclasses.astuple(got) == dataclasses.astuple(want)
        assert hash(got) == hash(want)
        with pytest.raises(dataclasses.FrozenInstanceError):
            got.country = "XX"  # type: ignore[misc]


def test_an_empty_section_has_no_records() -> None:
    """Zero rows decode to zero records."""
    assert decode_records([], SOURCES, "t.gfs") == ()


def _valid_rows(count: int = 5) -> list[list[Any]]:
    return _rows([NetworkRecord(country="US", asn=i, sources=("a",)) for i in range(count)])


# (field, bad value): each refused wherever it stands, also among equal values of
# another type (1 and True, 1 and 1.0) that a set would merge.
BAD_VALUES = [
    ("country", 1),
    ("country", ["US"]),
    ("asn", True),
    ("asn", 1.0),
    ("asn", "15169"),
    ("accuracy_km", 1.5),
    ("latitude", float("nan")),
    ("longitude", float("inf")),
    ("latitude", "52"),
    ("kinds", True),
    ("kinds", -1),
    ("kinds", 1 << 40),
    ("kinds", None),
    ("sources", [True]),
    ("sources", [0, 1.0]),
    ("sources", [[0]]),
    ("sources", [3]),
    ("sources", [-1]),
    ("sources", 0),
    ("sources", "a"),
]


@pytest.mark.parametrize("position", [0, 2, 4])
@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=repr)
def test_bad_values_are_refused_naming_record_and_field(
    field: str, value: object, position: int
) -> None:
    """The error names the first bad record and its field, wherever the value is."""
    rows = _valid_rows()
    rows[position][RECORD_FIELDS.index(field)] = value
    with pytest.raises(
        SnapshotError, match=rf"t\.gfs: corrupt record {position} \(field {field}\)"
    ):
        decode_records(rows, SOURCES, "t.gfs")


def test_equal_values_of_allowed_types_are_both_kept() -> None:
    """A coordinate 1 and 1.0 in one column each stay as written (no set merges them)."""
    rows = _valid_rows(2)
    rows[0][RECORD_FIELDS.index("latitude")] = 1
    rows[1][RECORD_FIELDS.index("latitude")] = 1.0
    first, second = decode_records(rows, SOURCES, "t.gfs")
    assert type(first.latitude) is int
    assert type(second.latitude) is float


@pytest.mark.parametrize(
    "rows", [{}, "x", [["US"]], [None], [[None] * (len(RECORD_FIELDS) + 1)]], ids=repr
)
def test_malformed_rows_are_refused(rows: object) -> None:
    """Not a list of full-width rows: refused before any field is read."""
    with pytest.raises(SnapshotError, match="corrupt record"):
        decode_records(rows, SOURCES, "t.gfs")
