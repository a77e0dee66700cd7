"""RIR statistics exchange files ("delegated-extended" and "delegated").

The five Regional Internet Registries (AFRINIC, APNIC, ARIN, LACNIC, RIPE NCC)
and the NRO publish what they delegated in one pipe-separated format::

    2|ripencc|20240501|227468|19830705|20240501|+0200          version line
    ripencc|*|ipv4|*|92371|summary                             summary lines
    ripencc|FR|ipv4|2.0.0.0|1048576|20100712|allocated|...     records
    ripencc|JP|ipv6|2001:200::|35|19990813|allocated|...

A record is ``registry|cc|type|start|value|date|status[|opaque-id[|extensions]]``.
For ``ipv4`` the value is a **count of addresses**, which need not be a power
of two (the range is ``start .. start + count - 1``); for ``ipv6`` it is a
**prefix length**. ``asn`` records are skipped.

What it states: records whose status is ``allocated`` or ``assigned`` give the
``registered_country`` only. A delegation says where the holder is registered,
not where the addresses are used, so the location ``country`` is left to
sources that measure it. ``available`` and ``reserved`` records are skipped.

The version line gives the ``version`` (its serial) and the ``data_date`` (its
end date). By default the number of records is checked against the version
line and the summary lines, which catches a truncated download.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from geofence.addr import V4_MAX
from geofence.errors import SourceError
from geofence.records import NetworkRecord
from geofence.sources._common import (
    StrPath,
    country_code,
    display,
    file_sha256,
    iter_lines,
    parse_address_text,
    require_file,
    show,
    slug,
)
from geofence.sources.base import RangeEntry, Source, SourceInfo
from geofence.sources.problems import ValueProblem, report

__all__ = ["rir_source"]

_STATED = frozenset({"allocated", "assigned"})
_UNSTATED = frozenset({"available", "reserved"})
_TYPES = ("asn", "ipv4", "ipv6")
_FORMAT_VERSION = re.compile(r"\d+(\.\d+)?")
_DATE = re.compile(r"\d{8}")


@dataclass(frozen=True, slots=True)
class _Header:
    registry: str
    serial: str
    records: int
    end_date: dt.date | None


def rir_source(
    path: StrPath,
    *,
    name: str | None = None,
    license: str = "",
    attribution: str = "",
    url: str = "",
    verify_counts: bool = True,
) -> Source:
    """Describe an RIR delegated(-extended) statistics file as a source.

    The version line is read now; the records when the source is read.

    Args:
        path: The statistics file (e.g. ``delegated-ripencc-extended-latest``).
        name: Source name; defaults to ``"rir-<registry>"`` from the version line.
        license: Licence of the data.
        attribution: Attribution text the licence requires.
        url: Where the file comes from.
        verify_counts: Check that the number of records matches the version
            line and the summary lines (a truncated file fails).

    Returns:
        The source.

    Raises:
        SourceError: The file is missing or its version line is malformed.
            Malformed records raise when the source is read.
    """
    file = require_file(path)
    shown = display(path)
    header = _read_header(file, shown)
    info = SourceInfo(
        name=name or f"rir-{slug(header.registry) or 'stats'}",
        format="rir",
        version=header.serial,
        license=license,
        attribution=attribution,
        url=url,
        data_date=header.end_date,
        sha256=file_sha256(file),
    )

    def read() -> Iterator[RangeEntry]:
        return _read(file, shown, info.name, verify_counts=verify_counts)

    return Source(info=info, read=read)


def _content(file: Path) -> Iterator[tuple[int, list[str]]]:
    """Non-blank, non-comment lines split on ``|``."""
    for lineno, line in iter_lines(file):
        text = line.strip()
        if text and not text.startswith("#"):
            yield lineno, text.split("|")


def _parse_header(fields: list[str], where: str) -> _Header:
    if len(fields) < 6 or not _FORMAT_VERSION.fullmatch(fields[0]):
        raise SourceError(
            f"{where}: expected the version line "
            "'version|registry|serial|records|startdate|enddate|UTCoffset', "
            f"got {show('|'.join(fields))}"
        )
    registry, serial, records_text, end_text = fields[1], fields[2], fields[3], fields[5]
    if not records_text.isdigit():
        raise SourceError(f"{where}: record count {show(records_text)} is not a number")
    end_date: dt.date | None = None
    for candidate in (end_text, serial):
        # The end date is YYYYMMDD; some files leave it empty and put the
        # date in the serial instead.
        if _DATE.fullmatch(candidate):
            try:
                end_date = dt.datetime.strptime(candidate, "%Y%m%d").date()
                break
            except ValueError:
                continue
    return _Header(registry, serial, int(records_text), end_date)


def _read_header(file: Path, shown: str) -> _Header:
    for lineno, fields in _content(file):
        return _parse_header(fields, f"{shown}:{lineno}")
    raise SourceError(f"{shown}: empty file, expected an RIR statistics version line")


def _read(file: Path, shown: str, source: str, *, verify_counts: bool) -> Iterator[RangeEntry]:
    header: _Header | None = None
    counted = dict.fromkeys(_TYPES, 0)
    summaries: dict[str, int] = {}
    for lineno, fields in _content(file):
        where = f"{shown}:{lineno}"
        if header is None:
            header = _parse_header(fields, where)
            continue
        if len(fields) >= 6 and fields[1] == "*" and fields[5] == "summary":
            kind = fields[2]
            if not fields[4].isdigit():
                raise SourceError(f"{where}: summary count {show(fields[4])} is not a number")
            summaries[kind] = int(fields[4])
            continue
        if len(fields) < 7:
            raise SourceError(
                f"{where}: expected 'registry|cc|type|start|value|date|status', "
                f"got {len(fields)} fields"
            )
        cc, kind, start, value, status = (
            fields[1],
            fields[2].lower(),
            fields[3],
            fields[4],
            fields[6].lower(),
        )
        if kind not in counted:
            raise SourceError(f"{where}: unknown record type {show(fields[2])}")
        counted[kind] += 1
        if status not in _STATED and status not in _UNSTATED:
            raise SourceError(f"{where}: unknown status {show(fields[6])}")
        if kind == "asn":
            continue
        version, first, last = _range(kind, start, value, where)
        if status in _UNSTATED:
            continue
        try:
            registered = country_code(cc, where, field="cc")
        except ValueProblem as problem:
            report(source, problem)  # skipped and counted, or raised under strict
            continue
        if registered is not None:
            yield RangeEntry(version, first, last, NetworkRecord(registered_country=registered))
    if header is None:
        raise SourceError(f"{shown}: empty file, expected an RIR statistics version line")
    if verify_counts:
        _verify(shown, header, counted, summaries)


def _range(kind: str, start: str, value: str, where: str) -> tuple[int, int, int]:
    version, first = parse_address_text(start, f"{where}: start")
    expected = 4 if kind == "ipv4" else 6
    if version != expected:
        raise SourceError(f"{where}: start {start!r} is not an IPv{expected} address")
    if not (value.isascii() and value.isdigit()):
        raise SourceError(f"{where}: value {show(value)} is not a number")
    number = int(value)
    if version == 4:
        # An address count, not a prefix length: ranges need not be CIDR blocks.
        if number < 1:
            raise SourceError(f"{where}: IPv4 address count must be at least 1, got {number}")
        last = first + number - 1
        if last > V4_MAX:
            raise SourceError(f"{where}: {number} addresses from {start} run past 255.255.255.255")
        return 4, first, last
    if number > 128:
        raise SourceError(f"{where}: IPv6 prefix length /{number} is longer than /128")
    host = (1 << (128 - number)) - 1
    if first & host:
        raise SourceError(f"{where}: {start}/{number} has host bits set")
    return 6, first, first | host


def _verify(
    shown: str, header: _Header, counted: dict[str, int], summaries: dict[str, int]
) -> None:
    total = sum(counted.values())
    if total != header.records:
        raise SourceError(
            f"{shown}: the version line announces {header.records} records but the file "
            f"has {total} (truncated or edited?)"
        )
    for kind, announced in summaries.items():
        found = counted.get(kind)
        if found is not None and found != announced:
            raise SourceError(
                f"{shown}: the summary line announces {announced} {kind} records but the "
                f"file has {found} (truncated or edited?)"
            )
