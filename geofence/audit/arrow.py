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
from geofence.audit import columns
from geofence.audit.clients import NOBODY, decide_rows, decide_texts
from geofence.audit.counting import ColumnCounter
from geofence.audit.formats import FieldNames, LineParser
from geofence.audit.inputs import BLOCK, LogSource
from geofence.audit.tally import Tally
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
    vectorised: bool | None = None,
) -> pa.RecordBatch:
    """Parse and decide a batch of log lines (without their newlines).

    Args:
        gf: The engine.
        lines: The lines, as an Arrow string array or a list of ``str``.
        fmt: Log format (``auto`` detects per line; a CSV batch must start with
            its header line).
        fields: Key names of JSON lines.
        trusted: Who may speak for the client in ``X-Forwarded-For``.
        vectorised: Parse as Arrow columns and decide per distinct client
            (:mod:`geofence.audit.columns`); ``None``: when numpy is installed.
            ``False``: line by line (the reference). Both give the same rows.

    Returns:
        One row per line: decided lines first, in order, then the lines with an
        ``error`` (unparsed, or ``invalid address``). ``at`` is Unix seconds.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    parser = LineParser(fmt, fields)
    if columns.available() if vectorised is None else vectorised:
        array = pa.array(lines, pa.large_string()) if isinstance(lines, list) else lines
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        nulls = array.null_count
        array = array.drop_null() if nulls else array
        # A value holding a newline is several lines: the reference splits it.
        if not pc.any(pc.match_substring(array, "\n"), min_count=0).as_py():
            cols = columns.ColumnParser(parser).parse_array(array, 1)
            return _columns_batch(gf, cols, trusted, ["null line"] * nulls)
    texts = lines if isinstance(lines, list) else lines.to_pylist()
    block = "".join(f"{t}\n" for t in texts if t is not None)
    nulls = sum(1 for t in texts if t is None)
    return _batch(gf, parser, block, trusted, ["null line"] * nulls)


def _columns_batch(
    gf: Geofence, cols: columns.Columns, trusted: TrustedProxies, failed: list[str]
) -> pa.RecordBatch:
    """:func:`_batch` for a block parsed as columns: decided once per distinct client."""
    import pyarrow as pa

    # The batch reports no forwarding-header evidence: a scratch tally takes it.
    clients = ColumnCounter(gf, Tally(), trusted).clients("", cols)
    encoded = clients.dictionary_encode()
    texts, decisions = decide_texts(gf, encoded.dictionary.to_pylist())
    index = encoded.indices
    errors = [INVALID + " address" if d.outcome == INVALID else None for d in decisions]
    decided = decisions_to_arrow(decisions, address_asns(gf, texts, decisions)).take(index)
    failed = [reason for _, reason, _ in cols.failed] + ["header line"] * cols.headers + failed
    n = len(failed)
    text = pa.string()
    head = [
        (pa.array(texts, text).take(index), text),
        (cols.at, pa.float64()),
        (cols.user.cast(text), text),
        (pa.array(errors, text).take(index), text),
    ]
    out = [pa.concat_arrays([c, pa.nulls(n, kind)]) for c, kind in head[:3]]
    out.append(pa.concat_arrays([head[3][0], pa.array(failed, text)]))
    for k, f in enumerate(decision_schema()):
        out.append(pa.concat_arrays([decided.column(k), pa.nulls(n, f.type)]))
    return pa.RecordBatch.from_arrays(out, schema=audit_schema())


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
    vectorised: bool | None = None,
) -> pa.RecordBatchReader:
    """A log file (plain, gzip or zstd) as a stream of :func:`audit_lines` batches.

    Read errors (a truncated gzip) end the stream with one row whose ``error``
    says so. ``vectorised`` as for :func:`audit_lines`.
    """
    import pyarrow as pa

    vector = columns.available() if vectorised is None else vectorised

    def batches() -> Iterator[pa.RecordBatch]:
        source = LogSource(path, block_size=columns.VECTOR_BLOCK if vector else BLOCK)
        parser = LineParser(fmt, fields)  # one per file: a CSV header holds for all its lines
        as_columns = columns.ColumnParser(parser)
        for block in source.blocks():
            too_long = ["line too long"] * len(block.oversized)
            if vector:
                cols = as_columns.parse(block.data, block.first_line)
                yield _columns_batch(gf, cols, trusted, too_long)
            else:
                yield _batch(gf, parser, block.text, trusted, too_long)
        if source.problem is not None:
            yield _batch(gf, parser, "", trusted, [f"read error: {source.problem.reason}"])

    return pa.RecordBatchReader.from_batches(audit_schema(), batches())
