"""Decisions as Apache Arrow columns: the batch interface DuckDB, Polars, Dask and Spark share.

:func:`decide_arrow` takes an Arrow array of address strings and returns one
:class:`pyarrow.RecordBatch` row per address. It is what the scale-out recipes
in ``docs/audit.md`` call inside each engine's batch hook (a DuckDB Arrow UDF,
Polars ``map_batches``, Dask ``map_partitions``, Spark ``mapInArrow``); a
:class:`~geofence.Geofence` pickles by reference, so the same engine object can
be shipped to every worker.

Work is done per distinct address and rows are built per distinct decision:
the addresses are dictionary-encoded and only the distinct ones decided, and
the decisions of an IP-only policy are shared objects, so a batch of a
million addresses usually holds a few hundred distinct ones. Those few
become a small table and each output column is that table's column taken by
the rows' indices.

The ``asn`` column is the address's AS number whenever the data has one: the
decision's own (a policy with ASN rules), else what the snapshot's ASN table
says for the address (:meth:`geofence.snapshot.reader.Snapshot.get`, as
``geofence explain`` and the audit's top ASNs read it).

Requires the ``audit`` extra (``pyarrow``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from geofence._batch import INVALID
from geofence.errors import InvalidAddressError
from geofence.kinds import kinds_to_names

if TYPE_CHECKING:
    import pyarrow as pa

    from geofence.decision import Decision
    from geofence.engine import Geofence

__all__ = [
    "DECISION_FIELDS",
    "address_asns",
    "decide_arrow",
    "decision_schema",
    "decisions_to_arrow",
]

#: Output columns, in order, with their Arrow types (as text; see :func:`decision_schema`).
DECISION_FIELDS: tuple[tuple[str, str], ...] = (
    ("action", "string"),
    ("route", "string"),
    ("rule_id", "string"),
    ("outcome", "string"),
    ("country", "string"),
    ("subdivision", "string"),
    ("asn", "int64"),
    ("kinds", "list<string>"),
)


def decision_schema() -> pa.Schema:
    """The Arrow schema of :func:`decide_arrow`'s output."""
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "list<string>": pa.list_(pa.string())}
    return pa.schema([pa.field(name, types[kind]) for name, kind in DECISION_FIELDS])


def decide_arrow(gf: Geofence, addresses: pa.Array | pa.ChunkedArray) -> pa.RecordBatch:
    """Decide every address of an Arrow array.

    Args:
        gf: The engine.
        addresses: A string array (``string``, ``large_string``, ``string_view``)
            or a chunked one. Nulls and text that is not an address give rows
            with ``outcome="invalid"`` (the policy's ``on_unresolved`` action),
            never an exception.

    Returns:
        One row per address, in order, with the columns of
        :data:`DECISION_FIELDS`: the action (``allow``, ``deny``, ...), the
        route target, the deciding rule id, the outcome, country, subdivision,
        the address's ASN (from the snapshot's ASN table when the decision
        does not carry one) and the network kinds' names.

    Raises:
        TypeError: ``addresses`` is not an Arrow array of strings.
    """
    import pyarrow as pa

    if isinstance(addresses, pa.ChunkedArray):
        addresses = addresses.combine_chunks()
    if not isinstance(addresses, pa.Array) or not (
        pa.types.is_string(addresses.type)
        or pa.types.is_large_string(addresses.type)
        or pa.types.is_string_view(addresses.type)
    ):
        raise TypeError(
            f"decide_arrow needs an Arrow array of address strings, got {type(addresses).__name__}"
            + (f" of {addresses.type}" if isinstance(addresses, pa.Array) else "")
        )
    encoded = addresses.dictionary_encode()
    distinct: list[str | None] = encoded.dictionary.to_pylist()
    index = encoded.indices
    if index.null_count:  # nulls become one more distinct item, decided as invalid
        index = index.fill_null(len(distinct))
        distinct.append(None)
    decisions = gf.decide_many(distinct, errors="mark")
    batch = decisions_to_arrow(decisions, address_asns(gf, distinct, decisions))
    return batch.take(index)


def address_asns(
    gf: Geofence, addresses: Sequence[str | None], decisions: Sequence[Decision]
) -> list[int | None]:
    """The AS number of each decided address: the decision's, else the snapshot's ASN table's.

    Args:
        gf: The engine that made the decisions.
        addresses: The address texts decided (``None`` for a null item).
        decisions: Their decisions, in the same order.

    Returns:
        One AS number or ``None`` (no ASN data, or an invalid item) per address.
    """
    snapshot = gf.snapshot
    found: dict[str, int | None] = {}
    out: list[int | None] = []
    for address, d in zip(addresses, decisions, strict=True):
        if d.asn is not None or address is None or d.outcome == INVALID:
            out.append(d.asn)
            continue
        if address not in found:
            try:
                record = snapshot.get(address)
            except InvalidAddressError:  # decided by another reading (a port, brackets)
                record = None
            found[address] = record.asn if record is not None else None
        out.append(found[address])
    return out


def decisions_to_arrow(
    decisions: list[Decision], asns: Sequence[int | None] | None = None
) -> pa.RecordBatch:
    """Decisions as a record batch with the columns of :data:`DECISION_FIELDS`.

    Args:
        decisions: One per row.
        asns: The rows' AS numbers (:func:`address_asns`); the decisions' own
            when not given.
    """
    import pyarrow as pa

    slot: dict[int, int] = {}
    distinct: list[Decision] = []
    rows: list[int] = []
    append = rows.append
    for d in decisions:
        k = slot.get(id(d))
        if k is None:
            k = slot[id(d)] = len(distinct)
            distinct.append(d)
        append(k)
    schema = decision_schema()
    table = pa.RecordBatch.from_pylist([_row(d) for d in distinct], schema=schema)
    batch = table.take(pa.array(rows, type=pa.int32()))
    if asns is None:
        return batch
    at = schema.get_field_index("asn")
    return batch.set_column(at, schema.field(at), pa.array(asns, pa.int64()))


def _row(d: Decision) -> dict[str, Any]:
    return {
        "action": d.action.value,
        "route": d.route,
        "rule_id": d.rule_id,
        "outcome": d.outcome,
        "country": d.country,
        "subdivision": d.subdivision,
        "asn": d.asn,
        "kinds": kinds_to_names(d.kinds),
    }
