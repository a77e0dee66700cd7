r"""Vectorised parsing: a block of nginx/combined lines becomes Arrow columns, not Python tuples.

The per-line reference is :class:`geofence.audit.formats.LineParser`; this
module reads the same lines and must give the same rows. A block's text is
laid out as one Arrow string array of lines without copying it line by line
(the newline offsets come from one numpy pass over its bytes), and one
``pyarrow.compute.extract_regex`` call takes the peer, user, time and
``X-Forwarded-For`` of every line that has the nginx/combined shape.

The Arrow pattern is deliberately stricter than the reference's: its
unquoted fields (peer, ident, user, status, size) must be printable ASCII,
where the reference takes any non-space text. So every line it matches is a
line the reference matches, with the same fields. Every line it does not
match, whatever the reason (JSON in an ``auto`` log, Apache ``\"`` escapes,
binary junk, an empty line, a non-ASCII user), goes to
:meth:`~geofence.audit.formats.LineParser.parse_lines`, which parses it or
names its failure exactly as the reference does. Nothing is dropped: each
line of a block is a row or a failure, and rows keep the order of their lines.

Time stamps repeat (a block covers a few seconds or minutes), so they are
dictionary-encoded and only the distinct texts are converted, by the
reference's own converter.

Requires the ``audit`` extra (``pyarrow`` and ``numpy``); without it the
audit runs the reference path (:func:`available`).
"""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from geofence.audit.formats import LineParser, Rows

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["VECTOR_BLOCK", "ColumnParser", "Columns", "available"]

#: Bytes per block on the vectorised path: large enough that a block's clients,
#: proxy pairs and minutes repeat, small enough to keep memory flat.
VECTOR_BLOCK = 4 << 20

_PRINTABLE = r"[!-~]+"  # a subset of the reference's \S+
_QUOTED = r'"[^"\n]*"'
#: The nginx/Apache combined line and nginx's optional "$http_x_forwarded_for"
#: (the reference's ``_COMBINED``, with printable-ASCII unquoted fields). RE2
#: syntax; anything after the fourth quoted field is allowed, as there.
PATTERN = (
    rf"^(?P<peer>{_PRINTABLE}) {_PRINTABLE} (?P<user>{_PRINTABLE}) \[(?P<time>[^\]\n]+)\] "
    rf"{_QUOTED} {_PRINTABLE} {_PRINTABLE} {_QUOTED} {_QUOTED}"
    r'(?: "(?P<xff>[^"\n]*)")?'
)

#: nginx's usual time text, all ASCII: 17 characters, ":" and two digits of seconds,
#: then 6 characters (`` +0000``). Its minute is the text with ``:00`` seconds.
_USUAL_TIME = r"^[ -~]{17}:[0-9][0-9][ -~]{6}$"
_UNSEEN = object()
#: Lines from which a block's regular expression runs in two threads.
_SPLIT_AT = 20_000


def available() -> bool:
    """Whether the vectorised path can run (``pyarrow`` and ``numpy`` installed; not imported)."""
    return all(importlib.util.find_spec(name) is not None for name in ("pyarrow", "numpy"))


@dataclass(slots=True)
class Columns:
    """The parsed lines of one block as Arrow arrays (one row per parsed line, in line order)."""

    peer: pa.Array
    """Socket peer (or client) address text, as logged (``large_string``)."""

    xff: pa.Array
    """``X-Forwarded-For`` value, null when absent, empty or ``-``."""

    at: pa.Array
    """Unix time of the request (``float64``), null without a usable time."""

    minute: pa.Array
    """Start of the request's minute (``float64``), null without a usable time."""

    user: pa.Array
    """User or account id, null when absent or ``-``."""

    failed: list[tuple[int, str, str]] = field(default_factory=list)
    """(line number, reason, the line's first characters) per unparsed line, in order."""

    headers: int = 0
    """Header lines read (a CSV source's first line)."""

    def __len__(self) -> int:
        return len(self.peer)


class ColumnParser:
    """Parses blocks of one log source into :class:`Columns`.

    Args:
        parser: The source's reference parser (format, field names, CSV state);
            it reads every line this one cannot, and all lines of JSON and CSV logs.
    """

    def __init__(self, parser: LineParser) -> None:
        self.parser = parser
        self._minutes: dict[str, float | None] = {}
        self._started = False

    def parse(self, text: str | bytes, first_line: int) -> Columns:
        """Parse a block of complete lines (each ending with a newline).

        Args:
            text: The lines, or their bytes as read (decoded from UTF-8 as
                :attr:`geofence.audit.inputs.Block.text` decodes them).
            first_line: Line number of the block's first line in its source (from 1).
        """
        parser = self.parser
        if isinstance(text, bytes):
            # An ASCII block of nginx/combined lines after the source's first block
            # (which may start with a header) needs no decoding: its bytes are the
            # text's UTF-8. Anything else is decoded as Block.text decodes it.
            if self._started and parser.reads_combined and text.isascii():
                return self._combined(text, first_line, 0)
            text = text.decode("utf-8", "replace")
        self._started = True
        text, first_line, headers = parser.start(text, first_line)
        if not parser.reads_combined:  # JSON and CSV logs: the reference, as columns
            rows = parser.parse(text, first_line)
            cols = _from_rows(rows)
            cols.failed, cols.headers = rows.failed, headers
            return cols
        return self._combined(text.encode(), first_line, headers)

    def _combined(self, data: bytes, first_line: int, headers: int) -> Columns:
        """Columns of a block of nginx/combined lines given as UTF-8 bytes."""
        cols = self._columns(_lines(data), first_line, newlines=True)
        cols.headers = headers
        return cols

    def parse_array(self, lines: pa.Array, first_line: int) -> Columns:
        """Parse lines given as an Arrow string array, without their newlines.

        Args:
            lines: The lines (no nulls; no element holds a newline).
            first_line: Line number of the first line (from 1).
        """
        import pyarrow as pa

        parser = self.parser
        lines = lines.cast(pa.large_string())
        headers = 0
        if len(lines):
            _, _, headers = parser.start(f"{lines[0].as_py()}\n", first_line)
            lines, first_line = lines.slice(headers), first_line + headers
        if not parser.reads_combined:
            cols = self.parse("".join(f"{t}\n" for t in lines.to_pylist()), first_line)
        else:
            cols = self._columns(lines, first_line, newlines=False)
        cols.headers = headers
        return cols

    def _columns(self, lines: pa.Array, first_line: int, *, newlines: bool) -> Columns:
        """Columns of nginx/combined ``lines`` (each ending with its newline when ``newlines``)."""
        if not len(lines):
            return _from_rows(Rows())
        found = _extract(lines)
        cols = self._matched(found.filter(found.is_valid()) if found.null_count else found)
        if found.null_count:
            self._rest(cols, lines, found, first_line, newlines)
        return cols

    def _matched(self, found: pa.StructArray) -> Columns:
        """Columns of the lines the Arrow pattern matched."""
        import pyarrow as pa
        import pyarrow.compute as pc

        absent = pa.scalar(None, pa.large_string())
        user = found.field("user")
        user = pc.if_else(pc.equal(user, "-"), absent, user)
        if self.parser.format == "combined":
            xff = pa.nulls(len(found), pa.large_string())
        else:
            xff = found.field("xff")
            xff = pc.if_else(pc.is_in(xff, pa.array(["-", ""], pa.large_string())), absent, xff)
        times = found.field("time").dictionary_encode()
        at, minute = self._stamps(times.dictionary)
        return Columns(
            peer=found.field("peer"),
            xff=xff,
            at=at.take(times.indices),
            minute=minute.take(times.indices),
            user=user,
        )

    def _stamps(self, times: pa.Array) -> tuple[pa.Array, pa.Array]:
        """(Unix time, minute start) of distinct nginx time texts, read as the reference does.

        The usual form (``01/Mar/2026:10:00:07 +0000``, ASCII) is read as its
        minute (the text with ``:00`` seconds, converted once per distinct
        minute by the reference's converter) plus its seconds, in Arrow;
        any other text goes to the reference's converter itself.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        usual = pc.match_substring_regex(times, _USUAL_TIME)
        if not pc.all(usual, min_count=0).as_py():
            return self._stamps_each(times, usual)
        key = pc.binary_join_element_wise(
            pc.utf8_slice_codeunits(times, 0, 17),
            pc.utf8_slice_codeunits(times, 20, 26),
            pa.scalar(":00", times.type),
        )
        minutes = key.dictionary_encode()
        known = self._minutes
        if len(known) > 100_000:
            known.clear()
        starts = []
        for text in minutes.dictionary.to_pylist():
            start = known.get(text, _UNSEEN)
            if start is _UNSEEN:
                start = known[text] = self.parser.minute_start(text)
            starts.append(start)
        minute = pa.array(starts, pa.float64()).take(minutes.indices)
        seconds = pc.utf8_slice_codeunits(times, 18, 20).cast(pa.float64())
        return pc.add(minute, seconds), minute

    def _stamps_each(self, times: pa.Array, usual: pa.Array) -> tuple[pa.Array, pa.Array]:
        """:meth:`_stamps` when some texts are unusual: those go to the reference one by one."""
        import pyarrow as pa
        import pyarrow.compute as pc

        at_usual, minute_usual = self._stamps(times.filter(usual))
        others = self.parser.stamps(times.filter(pc.invert(usual)).to_pylist())
        position = pa.concat_arrays(
            [pc.indices_nonzero(usual), pc.indices_nonzero(pc.invert(usual))]
        )
        order = pc.sort_indices(position)
        at = pa.concat_arrays([at_usual, pa.array([s[0] for s in others], pa.float64())])
        minute = pa.concat_arrays([minute_usual, pa.array([s[1] for s in others], pa.float64())])
        return at.take(order), minute.take(order)

    def _rest(
        self, cols: Columns, lines: pa.Array, found: pa.StructArray, first_line: int, newlines: bool
    ) -> None:
        """Hand the lines the pattern did not match to the reference, and merge its rows in."""
        import pyarrow as pa
        import pyarrow.compute as pc

        missed = pc.indices_nonzero(found.is_null())
        numbers = [first_line + k for k in missed.to_pylist()]
        texts = lines.take(missed).to_pylist()
        if newlines:
            texts = [t[:-1] for t in texts]
        rows = Rows()
        taken = self.parser.parse_lines(rows, list(zip(numbers, texts, strict=True)))
        cols.failed = rows.failed
        if not taken:
            return
        # Rows the reference parsed go back between the matched ones, in line order.
        extra = _from_rows(rows)
        position = pa.concat_arrays(
            [
                pc.indices_nonzero(found.is_valid()).cast(pa.int64()),
                pa.array([n - first_line for n in taken], pa.int64()),
            ]
        )
        order = pc.sort_indices(position)
        for name in ("peer", "xff", "at", "minute", "user"):
            merged = pa.concat_arrays([getattr(cols, name), getattr(extra, name)])
            setattr(cols, name, merged.take(order))


def _extract(lines: pa.Array) -> pa.StructArray:
    """``extract_regex`` of :data:`PATTERN` over the lines, the two halves of a big block at once.

    The kernel releases the GIL, so a second thread takes half of the lines: the
    regular expression is most of a block's parsing work.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(lines) < _SPLIT_AT:
        return pc.extract_regex(lines, PATTERN)
    half = len(lines) // 2
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="geofence-audit-re") as pool:
        second = pool.submit(pc.extract_regex, lines.slice(half), PATTERN)
        first = pc.extract_regex(lines.slice(0, half), PATTERN)
        return pa.concat_arrays([first, second.result()])


def _lines(data: bytes) -> pa.Array:
    """The block's lines as one ``large_string`` array over its bytes (each with its newline).

    ``data`` is valid UTF-8: ASCII, or the encoding of a text decoded with
    replacement characters.
    """
    import numpy as np
    import pyarrow as pa

    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 0x0A)
    offsets = np.empty(len(ends) + 1, np.int64)
    offsets[0] = 0
    offsets[1:] = ends + 1
    return pa.Array.from_buffers(
        pa.large_string(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _from_rows(rows: Rows) -> Columns:
    """Reference rows as columns."""
    import pyarrow as pa

    text, floats = pa.large_string(), pa.float64()
    return Columns(
        peer=pa.array(rows.peer, text),
        xff=pa.array(rows.xff, text),
        at=pa.array(rows.at, floats),
        minute=pa.array(rows.minute, floats),
        user=pa.array(rows.user, text),
    )
