"""Scale-out recipes: the same audit in DuckDB, Polars, Dask and Spark.

Each recipe is a few lines around one idea: hand the engine Arrow batches of
log lines (or addresses) and let it call :func:`geofence.audit.arrow.audit_lines`
(or :func:`geofence.batch_arrow.decide_arrow`) on each. A
:class:`~geofence.Geofence` pickles by reference (snapshot path and digest,
policy), so shipping it to Dask or Spark workers sends a few kilobytes, and
each worker reopens the same snapshot file, refusing one with another digest.
``docs/audit.md`` shows each recipe and how it runs on a real cluster; the
tests run every one and check its counts against ``decide()``.

The engines are optional (the ``audit`` extra); each is imported inside its
recipe.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from typing import Any

from geofence.audit.arrow import audit_lines, audit_schema, log_batches
from geofence.audit.clients import NOBODY
from geofence.batch_arrow import decide_arrow, decision_schema
from geofence.engine import Geofence
from geofence.signals.proxy import TrustedProxies

__all__ = [
    "dask_action_counts",
    "duckdb_action_counts",
    "duckdb_register_udf",
    "polars_audit",
    "polars_decide",
    "spark_audit",
]


# -- DuckDB -----------------------------------------------------------------------------------


def duckdb_action_counts(
    con: Any, gf: Geofence, path: str, *, trusted: TrustedProxies = NOBODY
) -> dict[str | None, int]:
    """Arrow scan: DuckDB aggregates the stream of decided batches of one log file.

    Args:
        con: A ``duckdb`` connection.
        gf: The engine.
        path: A log file (plain, gzip or zstd).
        trusted: Who may speak for the client in ``X-Forwarded-For``.

    Returns:
        Requests per action (``error`` rows, lines not decided, under ``None``).
    """
    audit = log_batches(gf, path, trusted=trusted)  # a pyarrow.RecordBatchReader, scanned once
    con.register("audit", audit)
    try:
        rows = con.sql("SELECT action, count(*) FROM audit GROUP BY action").fetchall()
    finally:
        con.unregister("audit")
    return dict(rows)


def duckdb_register_udf(con: Any, gf: Geofence, name: str = "geofence_action") -> None:
    """A vectorised SQL function: ``geofence_action(address VARCHAR) -> VARCHAR``.

    DuckDB hands the function whole Arrow arrays, so ``SELECT
    geofence_action(ip), count(*) FROM t GROUP BY 1`` decides a column of
    addresses batch by batch.
    """
    import duckdb

    def action(addresses: Any) -> Any:
        return decide_arrow(gf, addresses).column("action")

    con.create_function(
        name, action, [duckdb.sqltype("VARCHAR")], duckdb.sqltype("VARCHAR"), type="arrow"
    )


# -- Polars -----------------------------------------------------------------------------------


def _polars_batch(gf: Geofence, addresses: Any) -> Any:
    import polars as pl
    import pyarrow as pa

    batch = decide_arrow(gf, addresses.to_arrow())
    return pl.Series(pa.StructArray.from_arrays(batch.columns, fields=list(batch.schema)))


def polars_decide(frame: Any, gf: Geofence, column: str = "client") -> Any:
    """Add the decision's columns to a Polars (lazy) frame with ``map_batches``.

    Args:
        frame: A ``polars.DataFrame`` or ``LazyFrame``.
        gf: The engine.
        column: The column of address strings.

    Returns:
        The frame with the columns of :data:`geofence.batch_arrow.DECISION_FIELDS`.
    """
    import polars as pl

    dtype = pl.Struct(dict(pl.DataFrame(decision_schema().empty_table()).schema))
    return frame.with_columns(
        pl.col(column).map_batches(partial(_polars_batch, gf), return_dtype=dtype).alias("_d")
    ).unnest("_d")


def _polars_lines(gf: Geofence, fmt: str, trusted: TrustedProxies, lines: Any) -> Any:
    import polars as pl
    import pyarrow as pa

    batch = audit_lines(gf, lines.to_arrow(), fmt=fmt, trusted=trusted)
    return pl.Series(pa.StructArray.from_arrays(batch.columns, fields=list(batch.schema)))


def polars_audit(
    frame: Any,
    gf: Geofence,
    *,
    fmt: str = "auto",
    column: str = "line",
    trusted: TrustedProxies = NOBODY,
) -> Any:
    """Parse and decide a Polars column of raw log lines with ``map_batches``.

    Args:
        frame: A ``polars.DataFrame`` or ``LazyFrame`` with one log line per row.
        gf: The engine.
        fmt: Log format.
        column: The column of lines.
        trusted: Who may speak for the client in ``X-Forwarded-For``.

    Returns:
        A frame with the columns of :func:`geofence.audit.arrow.audit_schema`, one
        row per line (decided lines first within each batch).
    """
    import polars as pl

    dtype = pl.Struct(dict(pl.DataFrame(audit_schema().empty_table()).schema))
    decide = partial(_polars_lines, gf, fmt, trusted)
    audited = pl.col(column).map_batches(decide, return_dtype=dtype)
    return frame.select(audited.alias("_a")).unnest("_a")


# -- Dask -------------------------------------------------------------------------------------


def _dask_partition(
    lines: Iterable[str], gf: Geofence, fmt: str, trusted: TrustedProxies
) -> list[dict[str | None, int]]:
    """One Dask partition of raw lines -> [requests per action] (``None``: not decided)."""
    batch = audit_lines(gf, [line.rstrip("\r\n") for line in lines], fmt=fmt, trusted=trusted)
    return [dict(Counter(batch.column("action").to_pylist()))]


def dask_action_counts(
    client: Any,
    gf: Geofence,
    paths: Sequence[str],
    *,
    fmt: str = "auto",
    blocksize: str = "16MiB",
    trusted: TrustedProxies = NOBODY,
) -> dict[str | None, int]:
    """``dask.bag.read_text`` + ``map_partitions``: each worker parses and decides its part.

    Args:
        client: A ``distributed.Client`` (its cluster does the work).
        gf: The engine (pickled by reference to the workers).
        paths: Log files, or globs, as ``read_text`` takes them (uncompressed
            files are split into ``blocksize`` parts; gzip files are one part each).
        fmt: Log format.
        blocksize: Bytes per partition.
        trusted: Who may speak for the client in ``X-Forwarded-For``.

    Returns:
        Requests per action (``None``: lines not decided).
    """
    import dask.bag as db

    bag = db.read_text(list(paths), blocksize=blocksize)  # type: ignore[no-untyped-call]
    parts = bag.map_partitions(_dask_partition, gf, fmt, trusted).compute(scheduler=client.get)
    total: Counter[str | None] = Counter()
    for part in parts:
        total.update(part)
    return dict(total)


# -- Spark ------------------------------------------------------------------------------------


def _spark_batches(
    batches: Iterator[Any], gf: Geofence, fmt: str, column: str, trusted: TrustedProxies
) -> Iterator[Any]:
    for batch in batches:
        yield audit_lines(gf, batch.column(column), fmt=fmt, trusted=trusted)


def spark_audit(
    frame: Any,
    gf: Geofence,
    *,
    fmt: str = "auto",
    column: str = "value",
    trusted: TrustedProxies = NOBODY,
) -> Any:
    """``mapInArrow``: every line of a Spark DataFrame of raw log lines, parsed and decided.

    Args:
        frame: A DataFrame with a string column of log lines (``spark.read.text``
            gives ``value``).
        gf: The engine (pickled by reference to the executors).
        fmt: Log format.
        column: The column of lines.
        trusted: Who may speak for the client in ``X-Forwarded-For``.

    Returns:
        A DataFrame with the columns of :func:`geofence.audit.arrow.audit_schema`.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    schema = from_arrow_schema(audit_schema())
    return frame.select(column).mapInArrow(
        partial(_spark_batches, gf=gf, fmt=fmt, column=column, trusted=trusted), schema
    )
