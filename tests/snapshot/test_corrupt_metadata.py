"""Checksum-valid files with bad JSON metadata or records: a SnapshotError, never another error.

Deep nesting (``RecursionError``), integers past Python's digit limit, garbage
dates (``ValueError`` on property access, before) and non-finite coordinates
all become a :class:`~geofence.errors.SnapshotError` naming the file, at open.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import pytest

from geofence.errors import SnapshotError
from geofence.records import NetworkRecord
from geofence.snapshot.build import build_snapshot
from geofence.snapshot.reader import Snapshot
from geofence.sources.base import RangeEntry
from tests.snapshot.resum import layout, sections
from tests.strategies import make_source


@functools.cache
def _sample() -> bytes:
    record = NetworkRecord(country="DE", latitude=52.5, longitude=13.4)
    entry = RangeEntry(4, 0x08080800, 0x080808FF, record)
    return build_snapshot([make_source("geo", [entry])], name="sample")


def _with_json(tag: bytes, text: bytes) -> bytes:
    parts = sections(_sample())
    parts[tag] = text
    return layout(parts)


def _meta_with(**changes: object) -> bytes:
    meta = json.loads(sections(_sample())[b"META"])
    meta.update(changes)
    return _with_json(b"META", json.dumps(meta).encode())


def _records_with(field: int, value: str) -> bytes:
    rows = sections(_sample())[b"RECS"].decode()
    row = json.loads(rows)[0]
    cells = [json.dumps(v) for v in row]
    cells[field] = value
    return _with_json(b"RECS", f"[[{','.join(cells)}]]".encode())


CASES: dict[str, tuple[Callable[[], bytes], str]] = {
    "deep_records": (
        lambda: _with_json(b"RECS", b"[" * 100_000 + b"]" * 100_000),
        "nested too deeply",
    ),
    "deep_meta": (
        lambda: _with_json(b"META", b'{"sources":' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
        "nested too deeply",
    ),
    "huge_integer": (lambda: _records_with(4, "9" * 5000), "corrupt RECS section"),
    "not_utf8": (lambda: _with_json(b"META", b'{"sources":[],"x":"\xff"}'), "corrupt META"),
    "garbage_data_date": (lambda: _meta_with(data_date="2025-13-45"), "data_date"),
    "numeric_data_date": (lambda: _meta_with(data_date=20250101), "data_date"),
    "garbage_built_at": (lambda: _meta_with(built_at="yesterday"), "built_at"),
    "nan_latitude": (lambda: _records_with(8, "NaN"), "field latitude"),
    "infinite_longitude": (lambda: _records_with(9, "-Infinity"), "field longitude"),
    "bool_source_index": (lambda: _records_with(11, "[true]"), "field sources"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_metadata_is_a_snapshot_error_at_open(name: str) -> None:
    """Each file is refused at open with the file name and the reason."""
    make, fragment = CASES[name]
    with pytest.raises(SnapshotError) as info:
        Snapshot.from_bytes(make(), origin="bad.gfs")
    assert str(info.value).startswith("bad.gfs: ")
    assert fragment in str(info.value)


def test_layout_helper_round_trips() -> None:
    """The test's own encoder reproduces a valid file from its sections."""
    assert layout(sections(_sample())) == _sample()


def test_dates_of_a_valid_file_read_back() -> None:
    """Valid dates still parse to date and datetime objects."""
    snap = Snapshot.from_bytes(_sample())
    assert snap.built_at is not None
    assert snap.data_date is None or snap.data_date.year > 2000
