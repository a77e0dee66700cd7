"""Running an audit: sources -> blocks -> rows -> client addresses -> decisions -> counts.

Two paths give the same counts. The vectorised one (with the ``audit``
extra) parses a block into Arrow columns (:mod:`.columns`) and decides and
counts per distinct value (:mod:`.counting`). The reference, used without
pyarrow or when asked for (``AuditOptions(vectorised=False)``), parses a
block into :class:`~.formats.Rows` and resolves, decides
(:func:`geofence.audit.clients.decide_rows`) and counts every line. Both
count into one :class:`~.tally.Tally`.
"""

from __future__ import annotations

import gc
import importlib.abc
import importlib.machinery
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from geofence._batch import INVALID
from geofence.audit import columns
from geofence.audit.ahead import read_ahead
from geofence.audit.clients import NOBODY, decide_rows
from geofence.audit.columns import VECTOR_BLOCK
from geofence.audit.counting import ColumnCounter
from geofence.audit.formats import FieldNames, LineParser, Rows
from geofence.audit.inputs import BLOCK, MAX_LINE, Block, LogSource
from geofence.audit.tally import Tally
from geofence.audit.workaround import WorkaroundView
from geofence.engine import Geofence
from geofence.errors import GeofenceError
from geofence.signals.history import HistoryConfig
from geofence.signals.proxy import TrustedProxies

__all__ = [
    "ARROW_FROM",
    "COLUMNS_FROM",
    "VECTOR_BLOCK",
    "AuditOptions",
    "Auditor",
    "collect_less",
    "run_audit",
    "without_pandas",
]

#: Smaller blocks (a small log, the tail of one) are read line by line unless the
#: options ask for columns, and Arrow is started only for a block of ARROW_FROM bytes
#: (a log of a few megabytes): importing and starting it costs about 0.3 s of CPU and
#: 50 MiB, more than it saves on a smaller log.
COLUMNS_FROM = 256 << 10
ARROW_FROM = 2 << 20

#: Called after each block with (lines so far, bytes of the current source read, its size).
Progress = Callable[[int, int, int | None], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditOptions:
    """How to read and judge the logs."""

    format: str = "auto"
    """Log format: ``auto``, ``nginx``, ``combined``, ``jsonl`` or ``csv``."""

    fields: FieldNames = field(default_factory=FieldNames)
    """Key names of JSON and CSV logs."""

    trusted: TrustedProxies = NOBODY
    """Who may speak for the client in ``X-Forwarded-For`` (default: nobody)."""

    history: bool = True
    """Replay lines that name a user through the history signals (:mod:`.workaround`)."""

    history_config: HistoryConfig | None = None
    """Thresholds of the history signals (the defaults when ``None``)."""

    examples: int = 5
    """Examples kept per failure reason and per signal."""

    max_line: int = MAX_LINE
    """Longest line parsed, in bytes."""

    vectorised: bool | None = None
    """Parse and count blocks as Arrow columns: ``None`` for blocks of at least
    :data:`COLUMNS_FROM` bytes once one of :data:`ARROW_FROM` bytes came, when
    pyarrow and numpy are installed; ``True`` for every block; ``False`` for none
    (the per-line reference path)."""


class Auditor:
    """Feeds log sources through one engine and counts the outcome.

    Args:
        gf: The engine (policy and snapshot) to judge the traffic by.
        options: Reading and judging options.
        progress: Called after each block (for a progress bar).

    Raises:
        GeofenceError: ``options.vectorised`` is ``True`` and pyarrow or numpy is missing.
    """

    def __init__(
        self, gf: Geofence, options: AuditOptions | None = None, progress: Progress | None = None
    ) -> None:
        self.gf = gf
        self.options = options or AuditOptions()
        self.tally = Tally(self.options.examples)
        self.workaround: WorkaroundView | None = None
        self._progress = progress
        self._started = time.perf_counter()
        vectorised = self.options.vectorised
        if vectorised and not columns.available():
            raise GeofenceError(
                "AuditOptions(vectorised=True) needs pyarrow and numpy "
                "(pip install 'geofence[audit]'); None picks the per-line path without them"
            )
        self.vectorised = columns.available() if vectorised is None else vectorised
        """Whether (big enough) blocks go through the vectorised path."""
        self._columns_from = 0 if vectorised else COLUMNS_FROM
        self._arrow_from = 0 if vectorised else ARROW_FROM  # lowered to 0 once started
        self._counter = ColumnCounter(gf, self.tally, self.options.trusted)

    @property
    def block_size(self) -> int:
        """Bytes per block this auditor's sources should be read in."""
        return VECTOR_BLOCK if self.vectorised else BLOCK

    def feed(self, source: LogSource) -> None:
        """Read, parse, decide and count one source to its end (or its read error)."""
        tally = self.tally
        parser = LineParser(self.options.format, self.options.fields)
        lines = 0
        if self.vectorised:
            vector = columns.ColumnParser(parser)
            # The data stays behind in the read-ahead thread: only the parse travels.
            parsed = (
                (Block(b"", b.first_line, b.oversized), self._parse(vector, b))
                for b in source.blocks()
            )
            for block, found in read_ahead(parsed):
                if isinstance(found, Rows):
                    lines += self._rows(source.name, block, found)
                else:
                    lines += self._columns(source.name, block, found)
                self._report(source)
        else:
            for block in source.blocks():
                lines += self._rows(source.name, block, parser.parse(block.text, block.first_line))
                self._report(source)
        tally.unknown_fields.update(parser.unknown_fields)
        if source.problem is not None:
            p = source.problem
            tally.read_problems.append(
                {"source": p.source, "after_line": p.after_line, "reason": p.reason}
            )
        tally.sources.append(
            {"source": source.name, "lines": lines, "compression": source.compression}
        )

    def _parse(self, vector: columns.ColumnParser, block: Block) -> columns.Columns | Rows:
        """A block parsed as columns, or as rows when it is small (in the read-ahead thread)."""
        size = len(block.data)
        if size >= self._columns_from and size >= self._arrow_from:
            self._arrow_from = 0
            return vector.parse(block.data, block.first_line)
        return vector.parser.parse(block.text, block.first_line)

    def _lines(self, name: str, block: Block, parsed: Rows | columns.Columns) -> int:
        """Count a parsed block's lines, headers and failures (either path); its line count."""
        tally = self.tally
        for number in block.oversized:
            tally.fail(f"line longer than {self.options.max_line} bytes", f"{name}:{number}", "")
        for number, reason, text in parsed.failed:
            tally.fail(reason, f"{name}:{number}", text)
        count = len(parsed) + len(parsed.failed) + parsed.headers + len(block.oversized)
        tally.lines += count
        tally.headers += parsed.headers
        return count

    def _rows(self, name: str, block: Block, rows: Rows) -> int:
        """Count a block parsed as rows: the per-line reference path."""
        count = self._lines(name, block, rows)
        if len(rows):
            self._decide(name, rows)
        return count

    def _report(self, source: LogSource) -> None:
        if self._progress is not None:
            self._progress(self.tally.lines, source.consumed(), source.size)

    def _columns(self, name: str, block: Block, cols: columns.Columns) -> int:
        """The vectorised twin of :meth:`_rows`."""
        count = self._lines(name, block, cols)
        self._counter.count(name, cols, self._history if self.options.history else None)
        return count

    def _decide(self, name: str, rows: Rows) -> None:
        tally = self.tally
        self._counter.flush()  # addresses enter the tally in the order they came

        def signal(code: str, detail: str) -> None:
            tally.client_signal(code, name, detail)

        clients, decisions = decide_rows(self.gf, rows, self.options.trusted, signal)
        invalid: list[int] | None = None
        for i, d in enumerate(decisions):
            if d.outcome == INVALID:
                tally.invalid[clients[i][:200]] += 1
                invalid = invalid if invalid is not None else []
                invalid.append(i)
        minutes = rows.minute
        if invalid is not None:
            dropped = set(invalid)
            rest = [i for i in range(len(clients)) if i not in dropped]
            clients = [clients[i] for i in rest]
            decisions = [decisions[i] for i in rest]
            minutes = [rows.minute[i] for i in rest]
            users = [rows.user[i] for i in rest]
            ats = [rows.at[i] for i in rest]
        else:
            users, ats = rows.user, rows.at
        tally.untimed += minutes.count(None)
        tally.decided(clients, decisions, minutes)
        if self.options.history and any(users):
            self._history(clients, users, ats)

    def _history(
        self, clients: list[str], users: list[str | None], ats: list[float | None]
    ) -> None:
        view = self.workaround
        if view is None:
            view = self.workaround = WorkaroundView(
                self.gf, self.options.history_config, examples=self.options.examples
            )
        for client, user, at in zip(clients, users, ats, strict=True):
            if user is not None and at is not None:
                view.observe(user, client, at)

    def summary(self) -> dict[str, Any]:
        """The audit's JSON-ready summary (see ``docs/audit.md`` for its keys)."""
        self._counter.flush()
        out = self.tally.summary(self.gf)
        out["workarounds"] = self.workaround.as_dict() if self.workaround is not None else None
        elapsed = time.perf_counter() - self._started
        out["seconds"] = round(elapsed, 3)
        out["lines_per_second"] = round(self.tally.lines / elapsed) if elapsed > 0 else 0
        return out


def run_audit(
    gf: Geofence,
    sources: Iterable[str],
    options: AuditOptions | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Audit log files (``-`` for stdin) against ``gf``; returns the summary.

    Args:
        gf: The engine to judge the traffic by.
        sources: Paths of plain, gzip or zstd logs, or ``-``.
        options: Reading and judging options.
        progress: Called after each block.

    Returns:
        The summary (``docs/audit.md`` describes its keys).
    """
    options = options or AuditOptions()
    auditor = Auditor(gf, options, progress)
    for name in sources:
        auditor.feed(LogSource(name, max_line=options.max_line, block_size=auditor.block_size))
    return auditor.summary()


class _NoPandas(importlib.abc.MetaPathFinder):
    """An import finder that answers "not installed" for pandas (see :func:`without_pandas`)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ImportError(f"{fullname} is not imported during `geofence audit`")
        return None


@contextmanager
def without_pandas() -> Iterator[None]:
    """Keep pyarrow from importing pandas inside the block (the CLI's audits).

    pyarrow imports pandas, when it is installed, the first time it converts
    Python objects (``pa.array`` of a list, ``pa.scalar``), only to ask whether
    they are pandas objects. An audit never hands it any, and that import was
    the largest single part of the command's start-up (about 0.2 s of CPU and
    40 MiB). Inside the block importing pandas fails, which pyarrow takes as
    "not installed"; it tries again when asked for pandas itself
    (``to_pandas()``). Imports are process-wide, which is why the library
    leaves them alone and only the command line, which owns its process, uses
    this; a process that has imported pandas already is left as it is.
    """
    if "pandas" in sys.modules:
        yield
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


@contextmanager
def collect_less(threshold: int = 200_000) -> Iterator[None]:
    """Run the cyclic garbage collector less often inside the block (the CLI's audits).

    Parsing a block makes a tuple per line; with the default generation-0 threshold
    (700 allocations) the collector runs thousands of times per block, and its
    older generations walk the growing tallies each time. An audit makes no
    reference cycles per line, so collecting every ``threshold`` allocations loses
    nothing. The thresholds are process-wide, which is why the library leaves them
    alone and only the command line, which owns its process, uses this.
    """
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], threshold), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
