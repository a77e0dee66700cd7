"""Plain-text range lists: CSV address ranges and CIDR lists.

Two simple formats that operators keep by hand or export from other tools:

* **CSV ranges** (:func:`csv_ranges_source`): ``start,end,country[,subdivision]``
  with ``start`` and ``end`` as IP address text (inclusive, same family), a
  country code (ISO 3166-1 alpha-2) and an optional subdivision, either the
  full ISO 3166-2 code (``UA-43``) or the part after the hyphen (``43``).
  This is the layout of DB-IP's IP-to-Country Lite CSV.
* **CIDR lists** (:func:`cidr_list_source`): one prefix or address per line,
  optionally followed by a country code (after a comma or white space);
  ``#`` and ``;`` start comments, so Spamhaus-style DROP lists read as they
  are. Every line gets the network kinds, provider and default country given
  to the function.

Both accept blank lines, ``#`` comment lines and one header line (a first row
whose first field is a word, such as ``start,end,country``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from geofence.errors import SourceError
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.sources._common import (
    StrPath,
    country_code,
    dated_file_info,
    display,
    entry,
    is_header,
    iter_csv_rows,
    iter_lines,
    parse_address_text,
    parse_network,
    require_file,
    slug,
    subdivision_code,
)
from geofence.sources.base import RangeEntry, Source
from geofence.sources.problems import ValueProblem, report

__all__ = ["cidr_list_source", "csv_ranges_source"]

_EMPTY = NetworkRecord()


def csv_ranges_source(
    path: StrPath,
    *,
    name: str | None = None,
    license: str = "",
    attribution: str = "",
    url: str = "",
    data_date: dt.date | None = None,
) -> Source:
    """Describe a CSV file of ``start,end,country[,subdivision]`` rows as a source.

    Rows whose country is empty or a placeholder (``ZZ``) and that have no
    subdivision state nothing and are skipped.

    Args:
        path: The CSV file (UTF-8).
        name: Source name; defaults to the file name without its suffix.
        license: Licence of the data (SPDX id where one exists).
        attribution: Attribution text the licence requires.
        url: Where the data comes from.
        data_date: Date the data describes (the format carries none); also
            used as the version.

    Returns:
        The source.

    Raises:
        SourceError: The file is missing or unreadable. Malformed rows raise
            when the source is read.
    """
    file = require_file(path)
    info = dated_file_info(
        file,
        name=name or slug(file.stem) or "csv",
        format="csv",
        license=license,
        attribution=attribution,
        url=url,
        data_date=data_date,
    )
    shown = display(path)

    def read() -> Iterator[RangeEntry]:
        return _read_ranges(file, shown, info.name)

    return Source(info=info, read=read)


def _read_ranges(file: Path, shown: str, source: str) -> Iterator[RangeEntry]:
    first_row = True
    for lineno, fields in iter_csv_rows(file):
        where = f"{shown}:{lineno}"
        if first_row:
            first_row = False
            if is_header(fields):
                continue
        if len(fields) not in (3, 4):
            raise SourceError(
                f"{where}: expected 3 or 4 fields (start,end,country[,subdivision]), "
                f"got {len(fields)}"
            )
        start_version, start = parse_address_text(fields[0], f"{where}: start")
        end_version, end = parse_address_text(fields[1], f"{where}: end")
        if start_version != end_version:
            raise SourceError(
                f"{where}: start {fields[0]!r} is IPv{start_version} but "
                f"end {fields[1]!r} is IPv{end_version}"
            )
        if start > end:
            raise SourceError(f"{where}: start {fields[0]!r} is after end {fields[1]!r}")
        try:
            country = country_code(fields[2], where)
            subdivision = (
                subdivision_code(fields[3], country, where, allow_bare=True)
                if len(fields) == 4
                else None
            )
        except ValueProblem as problem:
            report(source, problem)  # skipped and counted, or raised under strict
            continue
        record = NetworkRecord(country=country, subdivision=subdivision)
        if record != _EMPTY:
            yield entry(start_version, start, end, record)


def cidr_list_source(
    path: StrPath,
    *,
    kinds: NetworkKind = NetworkKind.UNKNOWN,
    country: str | None = None,
    provider: str | None = None,
    name: str | None = None,
    license: str = "",
    attribution: str = "",
    url: str = "",
    data_date: dt.date | None = None,
) -> Source:
    """Describe a list of CIDR prefixes (one per line) as a source.

    Each line is a prefix (``192.0.2.0/24``) or a single address, optionally
    followed by a country code that overrides ``country`` for that line.
    Text after ``#`` or ``;`` is a comment.

    Args:
        path: The text file (UTF-8).
        kinds: Network kinds every listed network has (e.g.
            ``NetworkKind.VPN``).
        country: Country of every listed network, unless a line names its own.
        provider: Operator of the listed networks (``"Example VPN"``).
        name: Source name; defaults to the file name without its suffix.
        license: Licence of the data (SPDX id where one exists).
        attribution: Attribution text the licence requires.
        url: Where the data comes from.
        data_date: Date the data describes (the format carries none); also
            used as the version.

    Returns:
        The source. Lines that state nothing (no kinds, provider or country)
        are skipped.

    Raises:
        SourceError: The file is missing or unreadable, or ``country`` is not a
            country code. Malformed lines raise when the source is read.
    """
    file = require_file(path)
    default_country = country_code(country, "cidr list option", field="country")
    info = dated_file_info(
        file,
        name=name or slug(file.stem) or "cidr",
        format="cidr",
        license=license,
        attribution=attribution,
        url=url,
        data_date=data_date,
    )
    shown = display(path)
    kinds = NetworkKind(kinds)

    def read() -> Iterator[RangeEntry]:
        return _read_cidrs(file, shown, info.name, kinds, default_country, provider or None)

    return Source(info=info, read=read)


def _read_cidrs(
    file: Path,
    shown: str,
    source: str,
    kinds: NetworkKind,
    default_country: str | None,
    provider: str | None,
) -> Iterator[RangeEntry]:
    first_row = True
    for lineno, line in iter_lines(file):
        text = line.split("#", 1)[0].split(";", 1)[0].strip()
        if not text:
            continue
        where = f"{shown}:{lineno}"
        fields = [f.strip() for f in text.split(",")] if "," in text else text.split()
        if first_row:
            first_row = False
            if is_header(fields):
                continue
        if len(fields) > 2:
            raise SourceError(
                f"{where}: expected a prefix and an optional country, got {len(fields)} fields"
            )
        version, first, last = parse_network(fields[0], where)
        row_country = default_country
        if len(fields) == 2 and fields[1]:
            try:
                row_country = country_code(fields[1], where)
            except ValueProblem as problem:
                report(source, problem)  # skipped and counted, or raised under strict
                continue
        record = NetworkRecord(country=row_country, provider=provider, kinds=kinds)
        if record != _EMPTY:
            yield entry(version, first, last, record)
