"""The RECS section: JSON rows checked column by column, then built into records.

A snapshot holds a few thousand distinct records and every open decodes all of
them, so the work is done per column rather than per row: each column's value
*types* are collected into a set in one C-level pass and compared with what the
field allows, and only the few distinct values of the fields that need more
than a type (coordinates, kind bits, source indexes) are checked one by one. The
records are then built a column at a time as well (see :func:`_build`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any, Final

from geofence.errors import SnapshotError
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.snapshot.format import RECORD_FIELDS

__all__ = ["decode_records"]

_NONE: Final = type(None)
_ALL_KINDS: Final = sum(k.value for k in NetworkKind)

#: The types each field's JSON values may have (``int`` excludes ``bool``: types
#: are compared exactly).
_TYPES: Final[dict[str, frozenset[type]]] = {
    **dict.fromkeys(
        (
            "country",
            "subdivision",
            "registered_country",
            "city",
            "as_org",
            "provider",
            "territory",
            "alt_country",
            "dispute",
        ),
        frozenset({str, _NONE}),
    ),
    "asn": frozenset({int, _NONE}),
    "accuracy_km": frozenset({int, _NONE}),
    "latitude": frozenset({int, float, _NONE}),
    "longitude": frozenset({int, float, _NONE}),
    "kinds": frozenset({int}),
    "sources": frozenset({list}),
}


def _finite(value: Any) -> bool:
    # JSON allows NaN and Infinity literals: a coordinate must be a finite number.
    return value is None or math.isfinite(value)


def _kind_bits(value: Any) -> bool:
    return value >= 0 and not value & ~_ALL_KINDS


#: Checks of the distinct values of the fields whose type is not enough; ``sources``
#: is checked against the number of sources (:func:`_source_indexes`).
_VALUE_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    "latitude": _finite,
    "longitude": _finite,
    "kinds": _kind_bits,
}


def _source_indexes(count: int) -> Callable[[Any], bool]:
    # ``type(j) is int`` refuses True (source 1); ``0 <= j`` refuses -1 (the last source).
    return lambda value: all(type(j) is int and 0 <= j < count for j in value)


def decode_records(rows: object, sources: Sequence[str], name: str) -> tuple[NetworkRecord, ...]:
    """Check the decoded RECS rows and build the records.

    Args:
        rows: The decoded JSON of the section: a list of rows, one value per
            field of ``RECORD_FIELDS``.
        sources: The names of the snapshot's sources (``sources`` values index them).
        name: Where the snapshot comes from, for error messages.

    Raises:
        SnapshotError: Naming the first record (and field) that breaks the format.
    """
    if not isinstance(rows, list):
        raise SnapshotError(f"{name}: corrupt records section (not a list)")
    width = len(RECORD_FIELDS)
    if rows and (set(map(type, rows)) != {list} or set(map(len, rows)) != {width}):
        i = next(i for i, row in enumerate(rows) if type(row) is not list or len(row) != width)
        raise SnapshotError(f"{name}: corrupt record {i}")
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [()] * width
    for key, column in zip(RECORD_FIELDS, columns, strict=True):
        valid = _source_indexes(len(sources)) if key == "sources" else _VALUE_CHECKS.get(key)
        if not _column_ok(column, _TYPES[key], valid):
            i = _first_bad(column, _TYPES[key], valid)
            raise SnapshotError(f"{name}: corrupt record {i} (field {key})")
    at = RECORD_FIELDS.index
    kinds = {bits: NetworkKind(bits) for bits in set(columns[at("kinds")])}
    columns[at("kinds")] = list(map(kinds.__getitem__, columns[at("kinds")]))
    indexes = list(map(tuple, columns[at("sources")]))
    names = {js: tuple(sources[j] for j in js) for js in set(indexes)}
    columns[at("sources")] = list(map(names.__getitem__, indexes))
    return _build(columns, len(rows))


def _column_ok(
    column: Sequence[Any], allowed: frozenset[type], valid: Callable[[Any], bool] | None
) -> bool:
    """Whether every value has an allowed type and (if ``valid``) every distinct value passes.

    Types are compared before values are put in a set, where equal values of
    different types (``1`` and ``True``) would stand for each other.
    """
    if not set(map(type, column)) <= allowed:
        return False
    if valid is None:
        return True
    if list in allowed:  # source lists: every item an int, then each distinct list
        if not set(map(type, chain.from_iterable(column))) <= {int}:
            return False
        return all(map(valid, set(map(tuple, column))))
    return all(map(valid, set(column)))


def _first_bad(
    column: Sequence[Any], allowed: frozenset[type], valid: Callable[[Any], bool] | None
) -> int:
    """Index of the first value of a refused column that its field refuses."""
    return next(
        i
        for i, value in enumerate(column)
        if type(value) not in allowed or (valid is not None and not valid(value))
    )


def _build(columns: Sequence[Sequence[Any]], count: int) -> tuple[NetworkRecord, ...]:
    """The records, built column by column through the class's slot descriptors.

    Equivalent to ``NetworkRecord(**dict(zip(RECORD_FIELDS, row)))`` per row
    (``tests/snapshot/test_recs.py`` holds them equal): ``NetworkRecord`` is a
    frozen, slotted dataclass whose fields are exactly ``RECORD_FIELDS`` and
    which has no ``__post_init__``, so its ``__init__`` only stores each
    argument in its slot. Storing a whole column with ``map`` over the slot's
    descriptor does the same in C, and takes a third of the time of calling
    ``__init__`` row by row (which every open of a snapshot pays).
    """
    records = [object.__new__(NetworkRecord) for _ in range(count)]
    for key, column in zip(RECORD_FIELDS, columns, strict=True):
        list(map(getattr(NetworkRecord, key).__set__, records, column))
    return tuple(records)


def _fields_match() -> bool:
    """Whether :func:`_build` may be used: fields as in the format, nothing run after init."""
    names = tuple(f.name for f in dataclasses.fields(NetworkRecord))
    return names == RECORD_FIELDS and not hasattr(NetworkRecord, "__post_init__")


if not _fields_match():  # pragma: no cover - a guard for whoever changes NetworkRecord
    raise ImportError("NetworkRecord no longer matches RECORD_FIELDS: update snapshot/recs.py")
