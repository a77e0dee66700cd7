"""Access-log formats: nginx and combined, JSON lines, CSV; what a line says about its request.

A parser turns a block of log lines into :class:`Rows`: per parsed line the
socket peer, the ``X-Forwarded-For`` value (when the format has one), the time
and the user, plus the lines it could not parse with the reason. No line is
dropped: every line of a block ends up in ``Rows`` or in its ``failed`` list.

nginx and combined lines are matched a block at a time (one ``findall`` over
the block, with no Python code per line); only a block where some line does
not match is gone through line by line to find and name the failures. This
module is the reference: :mod:`geofence.audit.vector` reads the same lines as
Arrow columns and hands every line it cannot vouch for to
:meth:`LineParser.parse_lines`, which reads it exactly as :meth:`LineParser.parse`
would.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "FORMATS",
    "FieldNames",
    "LineParser",
    "Rows",
    "parse_time",
]

#: Formats ``geofence audit --format`` accepts.
FORMATS: Final = ("auto", "nginx", "combined", "jsonl", "csv")

# The nginx/Apache "combined" format, optionally followed by nginx's
# "$http_x_forwarded_for" (the ``main`` format of the stock nginx.conf) and by any
# further fields. Groups: peer, user, time, XFF.
_HEAD = r"(\S+) \S+ (\S+) \[([^\]\n]+)\] "
#: The block pattern. Each match takes a whole line and starts only at a line's
#: start (the look-behind), so a block's lines are read alike wherever they stand.
_COMBINED = re.compile(
    r"(?<![^\n])" + _HEAD + r'"[^"\n]*+" \S+ \S+ "[^"\n]*+" "[^"\n]*+"(?: "([^"\n]*+)")?[^\n]*+\n'
)
# A quoted field in which Apache's \" escapes may appear (tried line by line).
_Q = r'"[^"\\\n]*+(?:\\.[^"\\\n]*+)*+"'
_COMBINED_ESCAPED = re.compile(
    _HEAD + _Q + r" \S+ \S+ " + _Q + " " + _Q + r'(?: "([^"\\\n]*+(?:\\.[^"\\\n]*+)*+)")?.*'
)
_CLF_TIME = re.compile(r"(\d\d)/([A-Za-z]{3})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")

_MONTHS: Final = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


@dataclass(frozen=True, slots=True)
class FieldNames:
    """Which keys of a JSON or CSV line hold the request's parts (first present wins)."""

    ip: tuple[str, ...] = (
        "remote_addr",
        "client_ip",
        "clientip",
        "client_addr",
        "remote_ip",
        "ip",
        "src_ip",
        "c-ip",
        "client",
    )
    """The socket peer (or the client, in logs written behind a proxy that resolved it)."""

    xff: tuple[str, ...] = (
        "http_x_forwarded_for",
        "x_forwarded_for",
        "x-forwarded-for",
        "forwarded_for",
        "xff",
    )
    """The ``X-Forwarded-For`` header as received."""

    time: tuple[str, ...] = (
        "time",
        "timestamp",
        "@timestamp",
        "ts",
        "time_iso8601",
        "time_local",
        "datetime",
        "date",
    )
    """When the request arrived: Unix seconds (or milliseconds), ISO 8601 or nginx time."""

    user: tuple[str, ...] = (
        "user",
        "user_id",
        "userid",
        "account",
        "account_id",
        "subject",
        "username",
        "remote_user",
    )
    """The authenticated user or account: the subject of the history signals."""

    @classmethod
    def with_overrides(
        cls,
        *,
        ip: str | None = None,
        xff: str | None = None,
        time: str | None = None,
        user: str | None = None,
    ) -> FieldNames:
        """The defaults, with each given name replacing its list of candidates."""
        base = cls()
        return cls(
            ip=(ip,) if ip else base.ip,
            xff=(xff,) if xff else base.xff,
            time=(time,) if time else base.time,
            user=(user,) if user else base.user,
        )


@dataclass(slots=True)
class Rows:
    """The parsed lines of one block, as columns, and the lines that failed."""

    peer: list[str] = field(default_factory=list)
    """Socket peer (or client) address text, as logged."""

    xff: list[str | None] = field(default_factory=list)
    """``X-Forwarded-For`` value, ``None`` when absent or ``-``."""

    minute: list[float | None] = field(default_factory=list)
    """Unix time of the start of the request's minute, ``None`` without a usable time."""

    at: list[float | None] = field(default_factory=list)
    """Unix time of the request, ``None`` without a usable time."""

    user: list[str | None] = field(default_factory=list)
    """User or account id, ``None`` when absent or ``-``."""

    failed: list[tuple[int, str, str]] = field(default_factory=list)
    """(line number in the source, reason, the line's first characters) per unparsed line."""

    headers: int = 0
    """Header lines read (a CSV source's first line): neither requests nor failures."""

    def __len__(self) -> int:
        return len(self.peer)


def _clf_time(text: str) -> float | None:
    """Unix time of nginx/Apache time (``10/Oct/2000:13:55:36 -0700``), ``None`` if not one."""
    m = _CLF_TIME.fullmatch(text.strip())
    if m is None or m.group(2) not in _MONTHS:
        return None
    day, month, year, hour, minute, second, sign, zh, zm = m.groups()
    offset = dt.timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == "-" else 1)
    try:
        when = dt.datetime(
            int(year),
            _MONTHS[month],
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=dt.timezone(offset),
        )
    except ValueError:
        return None
    return when.timestamp()


class _Stamps(dict[str, tuple[float | None, float | None]]):
    """Log time text -> (Unix time, start of its minute), computed once per distinct text.

    Lines of a block share a few seconds' worth of time stamps; ``map(stamps.__getitem__,
    ...)`` answers the repeats from the dict in C and calls :meth:`__missing__` for new
    ones, which parses the date only once per minute and adds the seconds.
    """

    _NONE = (None, None)

    def __init__(self) -> None:
        super().__init__()
        self._minutes: dict[str, float | None] = {}

    def __missing__(self, text: str) -> tuple[float | None, float | None]:
        if len(self) > 100_000:
            self.clear()
            self._minutes.clear()
        # "01/Mar/2026:10:00:07 +0000": the minute is the text without ":07".
        if len(text) == 26 and text[17] == ":" and text[18:20].isdigit():
            key = text[:17] + text[20:]
            if key in self._minutes:
                minute = self._minutes[key]
            else:
                minute = self._minutes[key] = _clf_time(text[:17] + ":00" + text[20:])
            found = self._NONE if minute is None else (minute + int(text[18:20]), minute)
        else:
            when = _clf_time(text)
            found = self._NONE if when is None else (when, when - when % 60)
        self[text] = found
        return found


def parse_time(value: object) -> float | None:
    """Unix seconds from a log's time value, or ``None`` when it is not one.

    Accepts numbers (seconds; values above 10^11 are read as milliseconds),
    numeric strings, ISO 8601 (``2026-01-02T03:04:05Z``; a time without an
    offset is UTC) and nginx/Apache time (``10/Oct/2000:13:55:36 -0700``).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        clf = _clf_time(text)
        if clf is not None:
            return clf
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = dt.datetime.fromisoformat(text)
            except ValueError:
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            return when.timestamp()
    else:
        return None
    if not math.isfinite(seconds):
        return None
    return seconds / 1000.0 if abs(seconds) > 1e11 else seconds


def _present(value: str | None) -> str | None:
    """A logged value, ``None`` for nginx's ``-`` and empty fields."""
    return value if value and value != "-" else None


def _show(line: str) -> str:
    """The start of a line, for examples in the report."""
    return line[:160] + ("..." if len(line) > 160 else "")


class LineParser:
    """Parses blocks of one log source in a given format (or detects it: ``auto``).

    Args:
        fmt: One of :data:`FORMATS`.
        fields: Key names for JSON and CSV lines.

    Raises:
        ValueError: ``fmt`` is not a known format.
    """

    def __init__(self, fmt: str = "auto", fields: FieldNames | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")
        self.format = fmt
        self.fields = fields or FieldNames()
        self._csv: tuple[str, list[str]] | None = None  # delimiter and header of a CSV source
        self._first = True
        self._header_lines = 0
        f = self.fields
        # Top-level keys the field names read (a dotted name reads its first part).
        self._known = {name.split(".")[0] for name in (*f.ip, *f.xff, *f.time, *f.user)}
        self.unknown_fields: Counter[str] = Counter()
        """JSON keys and CSV columns no field name reads, with the lines they appeared on."""
        self._stamps = _Stamps()

    def parse(self, text: str, first_line: int) -> Rows:
        """Parse a block of complete lines (each ending with a newline).

        Args:
            text: The lines.
            first_line: Line number of the block's first line in its source (from 1).
        """
        rows = Rows()
        text, first_line, rows.headers = self.start(text, first_line)
        if self.reads_combined:
            lines = text.count("\n")
            found = _COMBINED.findall(text)
            if len(found) == lines:
                self._take_combined(rows, found)
                return rows
            # Some line is not a plain combined line: take the matches as they are
            # and go through the lines between them one by one.
            at, number = 0, first_line
            for m in _COMBINED.finditer(text):
                gap = text[at : m.start()]
                if gap:
                    number = self._lines(rows, gap, number)
                self._take_combined(rows, [m.groups()])
                at, number = m.end(), number + 1
            self._lines(rows, text[at:], number)
            return rows
        self._lines(rows, text, first_line)
        return rows

    @property
    def reads_combined(self) -> bool:
        """Whether blocks are matched as nginx/combined lines (not JSON or CSV only)."""
        return self.format in ("nginx", "combined", "auto") and self._csv is None

    def start(self, text: str, first_line: int) -> tuple[str, int, int]:
        """Take a source's first block: ``(text, first line, header lines)`` after any header.

        :meth:`parse` calls this itself; a caller parsing the lines some other way
        (:mod:`geofence.audit.vector`) calls it once, before its first block.
        """
        if not self._first:
            return text, first_line, 0
        self._first = False
        text, first_line = self._start(text, first_line)
        return text, first_line, self._header_lines

    def parse_lines(self, rows: Rows, lines: Sequence[tuple[int, str]]) -> list[int]:
        """Parse lines of a block one by one, each exactly as :meth:`parse` reads it there.

        Args:
            rows: Receives the parsed lines and the failures.
            lines: ``(line number, text without its newline)`` pairs, in order.

        Returns:
            The numbers of the lines that became rows (the others failed), in order.
        """
        combined = self.reads_combined
        taken: list[int] = []
        for number, line in lines:
            before = len(rows)
            m = _COMBINED.match(line + "\n") if combined else None
            if m is not None:
                self._take_combined(rows, [m.groups()])
            else:
                self._line(rows, line[:-1] if line.endswith("\r") else line, number)
            if len(rows) > before:
                taken.append(number)
        return taken

    def _lines(self, rows: Rows, text: str, number: int) -> int:
        """Parse ``text`` line by line from line ``number``; returns the next line's number."""
        lines = text.split("\n")
        del lines[-1]  # after the last newline
        for k, line in enumerate(lines, number):
            self._line(rows, line[:-1] if line.endswith("\r") else line, k)
        return number + len(lines)

    # -- format detection ------------------------------------------------------------------

    def _start(self, text: str, first_line: int) -> tuple[str, int]:
        """Read a CSV header off the source's first line (``csv``, or ``auto`` when it is one)."""
        head, _, rest = text.partition("\n")
        if self.format == "csv" or (
            self.format == "auto"
            and not head.lstrip().startswith("{")
            and _COMBINED.match(head) is None
            and self._header(head) is not None
        ):
            header = self._header(head)
            if header is not None:
                self._csv = header
                self._header_lines = 1
                return rest, first_line + 1
        return text, first_line

    def _header(self, line: str) -> tuple[str, list[str]] | None:
        """(delimiter, column names) when ``line`` is a CSV header naming an address column."""
        delimiter = max(",\t;|", key=line.count)
        try:
            cells = next(csv.reader([line], delimiter=delimiter))
        except csv.Error:  # a stray carriage return, a NUL...: not a header
            return None
        names = [n.strip().strip('"').strip() for n in cells]
        if any(n in self.fields.ip for n in names):
            return delimiter, names
        return None

    # -- per line ----------------------------------------------------------------------------

    def _line(self, rows: Rows, line: str, number: int) -> None:
        stripped = line.strip()
        if not stripped:
            rows.failed.append((number, "empty line", ""))
            return
        fmt = self.format
        failure = "not a log line"
        if fmt in ("jsonl", "auto") and stripped[0] in "{[":
            failure = self._json(rows, stripped)
        elif self._csv is not None and fmt in ("csv", "auto"):
            failure = self._csv_line(rows, line)
        elif fmt in ("nginx", "combined", "auto"):
            m = _COMBINED_ESCAPED.fullmatch(line)
            if m is not None:
                self._take_combined(rows, [m.groups()])
                return
            failure = "not an nginx/combined line" if fmt != "auto" else "not a recognised log line"
        elif fmt == "jsonl":
            failure = "not a JSON object"
        elif fmt == "csv":
            failure = f"no CSV header naming an address column ({', '.join(self.fields.ip)})"
        if failure:
            rows.failed.append((number, failure, _show(line)))

    def minute_start(self, text: str) -> float | None:
        """Unix time of nginx/Apache time text with ``00`` seconds (as :meth:`stamps` reads it)."""
        return _clf_time(text)

    def stamps(self, texts: Sequence[str]) -> list[tuple[float | None, float | None]]:
        """(Unix time, start of its minute) of nginx/Apache time texts (cached per text)."""
        return list(map(self._stamps.__getitem__, texts))

    def _take_combined(self, rows: Rows, found: Sequence[tuple[str, ...]]) -> None:
        """Append (peer, user, time, XFF) tuples as columns (C-level passes, no per-line code)."""
        if not found:
            return
        peers, users, stamps, xffs = zip(*found, strict=True)
        rows.peer.extend(peers)
        at, minute = zip(*map(self._stamps.__getitem__, stamps), strict=True)
        rows.at.extend(at)
        rows.minute.extend(minute)
        rows.user.extend([None if u == "-" else u for u in users])
        if self.format == "combined":
            rows.xff.extend([None] * len(peers))
        else:
            rows.xff.extend([None if x in ("-", "") else x for x in xffs])

    def _json(self, rows: Rows, line: str) -> str:
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            return "invalid JSON"
        if not isinstance(data, dict):
            return "JSON line is not an object"
        self._note_fields(data)
        return self._record(rows, lambda name: _dig(data, name))

    def _csv_line(self, rows: Rows, line: str) -> str:
        assert self._csv is not None
        delimiter, names = self._csv
        try:
            values = next(csv.reader([line], delimiter=delimiter))
        except csv.Error as exc:
            return f"invalid CSV: {exc}"
        if len(values) != len(names):
            return f"CSV line has {len(values)} fields, the header {len(names)}"
        record = dict(zip(names, values, strict=True))
        self._note_fields(record)
        return self._record(rows, record.get)

    def _note_fields(self, record: dict[str, Any]) -> None:
        """Count the keys of a record that none of the field names reads."""
        known = self._known
        for key in record:
            if key not in known:
                self.unknown_fields[key] += 1

    def _record(self, rows: Rows, get: Callable[[str], Any]) -> str:
        """Append one JSON/CSV record; returns a failure reason or ``""``."""
        f = self.fields
        peer = _first(get, f.ip)
        if not isinstance(peer, str) or not peer.strip():
            return f"no address field (looked for {', '.join(f.ip)})"
        xff = _first(get, f.xff)
        when = parse_time(_first(get, f.time))
        user = _first(get, f.user)
        rows.peer.append(peer.strip())
        rows.xff.append(_present(xff.strip()) if isinstance(xff, str) else None)
        rows.at.append(when)
        rows.minute.append(when - when % 60 if when is not None else None)
        rows.user.append(_present(str(user).strip()) if isinstance(user, (str, int)) else None)
        return ""


def _first(get: Callable[[str], Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = get(name)
        if value is not None:
            return value
    return None


def _dig(data: dict[str, Any], name: str) -> Any:
    """``data[name]``, or a dotted path through nested objects (``client.ip``)."""
    if name in data:
        return data[name]
    node: Any = data
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
