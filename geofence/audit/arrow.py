"""Raw log lines in, one Arrow row per line out: the unit every engine recipe maps.

:func:`audit_lines` parses a batch of log lines (an Arrow string array, as
Spark's ``read.text``, Polars or DuckDB give them), finds each client address
through the trusted-proxy setup and decides it. Its output has a row for every
input line: decided lines carry the decision's columns
(:data:`geofence.batch_arrow.DECISION_FIELDS`), lines that could not be parsed
carry the reason in ``error`` and nulls elsewhere, so an engine's counts add up
to its input. :func:`log_batches` streams a log file as such batches for an
engine that reads Arrow (DuckDB's scan of a ``RecordBatchReader``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from geofence._batch import INVALID
from geofence.audit.clients import NOBODY, decide_rows
from geofence.audit.formats import FieldNames, LineParser
from geofence.audit.inputs import LogSource
from geofence.batch_arrow import address_asns, decision_schema, decisions_to_arrow
from geofence.engine import Geofence
from geofence.signals.proxy import TrustedProxies

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["audit_lines", "audit_schema", "log_batches"]


def audit_schema() -> pa.Schema:
    """Columns of :func:`audit_lines`: the line's parts, ``error``, then the decision."""
    import pyarrow as pa

    head = [
        pa.field("client", pa.string()),
        pa.field("at", pa.float64()),
        pa.field("user", pa.string()),
        pa.field("error", pa.string()),
    ]
    return pa.schema([*head, *decision_schema()])


def audit_lines(
    gf: Geofence,
    lines: pa.Array | pa.ChunkedArray | list[str],
    *,
    fmt: str = "auto",
    fields: FieldNames | None = None,
    trusted: TrustedProxies = NOBODY,
) -> pa.RecordBatch:
    """Parse and decide a batch of log lines (without their newlines).

    Args:
        gf: The engine.
        lines: The lines, as an Arrow string array or a list of ``str``.
        fmt: Log format (``auto`` detects per line; a CSV batch must start with
            its header line).
        fields: Key names of JSON lines.
        trusted: Who may speak for the client in ``X-Forwarded-For``.

    Returns:
        One row per line: decided lines first, in order, then the lines with an
        ``error`` (unparsed, or ``invalid address``). ``at`` is Unix seconds.
    """
    texts = lines if isinstance(lines, list) else lines.to_pylist()
    parser = LineParser(fmt, fields)
    block = "".join(f"{t}\n" for t in texts if t is not None)
    nulls = sum(1 for t in texts if t is None)
    return _batch(gf, parser, block, trusted, ["null line"] * nulls)


def _batch(
    gf: Geofence, parser: LineParser, block: str, trusted: TrustedProxies, failed: list[str]
) -> pa.RecordBatch:
    """Parse and decide ``block`` (lines with newlines); ``failed``: more error rows."""
    import pyarrow as pa

    rows = parser.parse(block, 1)
    clients, decisions = decide_rows(gf, rows, trusted)
    errors = [INVALID + " address" if d.outcome == INVALID else None for d in decisions]
    failed = [reason for _, reason, _ in rows.failed] + ["header line"] * rows.headers + failed
    decided = decisions_to_arrow(decisions, address_asns(gf, clients, decisions))
    n = len(failed)
    columns = [
        pa.array([*clients, *[None] * n], pa.string()),
        pa.array([*rows.at, *[None] * n], pa.float64()),
        pa.array([*rows.user, *[None] * n], pa.string()),
        pa.array([*errors, *failed], pa.string()),
    ]
    for k, f in enumerate(decision_schema()):
        columns.append(pa.concat_arrays([decided.column(k), pa.nulls(n, f.type)]))
    return pa.RecordBatch.from_arrays(columns, schema=audit_schema())


def log_batches(
    gf: Geofence,
    path: str,
    *,
    fmt: str = "auto",
    fields: FieldNames | None = None,
    trusted: TrustedProxies = NOBODY,
) -> pa.RecordBatchReader:
    """A log file (plain, gzip or zstd) as a stream of :func:`audit_lines` batches.

    Read errors (a truncated gzip) end the stream with one row whose ``error``
    says so.
    """
    import pyarrow as pa

    def batches() -> Iterator[pa.RecordBatch]:
        source = LogSource(path)
        parser = LineParser(fmt, fields)  # one per file: a CSV header holds for all its lines
        for block in source.blocks():
            too_long = ["line too long"] * len(block.oversized)
            yield _batch(gf, parser, block.text, trusted, too_long)
        if source.problem is not None:
            yield _batch(gf, parser, "", trusted, [f"read error: {source.problem.reason}"])

    return pa.RecordBatchReader.from_batches(audit_schema(), batches())
