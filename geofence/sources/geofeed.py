"""Self-published IP geolocation feeds (RFC 8805 "geofeeds").

Each entry is one CSV line ``ip_prefix,alpha2code,region,city,postal_code``:

* ``ip_prefix``: a CIDR prefix (a bare address is read as a host prefix);
* ``alpha2code``: ISO 3166-1 alpha-2 country, or empty;
* ``region``: the full ISO 3166-2 code (``US-CA``), or empty; it must belong
  to ``alpha2code``;
* ``city``: free text, or empty;
* ``postal_code``: deprecated by RFC 8805 and ignored here.

Lines starting with ``#`` are comments. Trailing fields may be left out, and
fields after the fifth are ignored so that extended feeds still read. Country
and region are case-insensitive (RFC 8805 section 2.1.1.2 asks parsers to
treat them so) and stored in upper case.

Apple's iCloud Private Relay egress list uses the same layout; see
:mod:`geofence.sources.relay`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.sources._common import (
    StrPath,
    country_code,
    dated_file_info,
    display,
    entry,
    iter_csv_rows,
    parse_network,
    require_file,
    slug,
    subdivision_code,
)
from geofence.sources.base import RangeEntry, Source
from geofence.sources.problems import ValueProblem, report

__all__ = ["geofeed_source", "read_geofeed"]

_EMPTY = NetworkRecord()


def geofeed_source(
    path: StrPath,
    *,
    name: str | None = None,
    license: str = "",
    attribution: str = "",
    url: str = "",
    data_date: dt.date | None = None,
) -> Source:
    """Describe an RFC 8805 geofeed file as a source.

    Args:
        path: The geofeed CSV file (UTF-8).
        name: Source name; defaults to the file name without its suffix.
        license: Licence of the data.
        attribution: Attribution text the licence requires.
        url: Where the feed is published (the RFC 9632 ``geofeed:`` URL).
        data_date: Date the feed describes (the format carries none); also
            used as the version.

    Returns:
        The source. Entries that state no country, region or city are skipped.

    Raises:
        SourceError: The file is missing or unreadable. Malformed lines raise
            when the source is read.
    """
    file = require_file(path)
    info = dated_file_info(
        file,
        name=name or slug(file.stem) or "geofeed",
        format="geofeed",
        license=license,
        attribution=attribution,
        url=url,
        data_date=data_date,
    )
    shown = display(path)

    def read() -> Iterator[RangeEntry]:
        return read_geofeed(file, shown, source=info.name)

    return Source(info=info, read=read)


def read_geofeed(
    file: Path,
    shown: str,
    *,
    kinds: NetworkKind = NetworkKind.UNKNOWN,
    provider: str | None = None,
    source: str = "",
) -> Iterator[RangeEntry]:
    """Yield the entries of an RFC 8805 feed, adding ``kinds`` and ``provider`` to each.

    Args:
        file: The feed file.
        shown: The path as given, for error messages.
        kinds: Network kinds to state for every entry.
        provider: Provider to state for every entry.
        source: Source name under which a line with a malformed country or
            region is skipped and counted (:mod:`geofence.sources.problems`).

    Raises:
        SourceError: A line is malformed (bad prefix; a bad country or region
            unless a build is skipping those).
    """
    for lineno, row in iter_csv_rows(file):
        where = f"{shown}:{lineno}"
        fields = row + [""] * (4 - len(row))
        version, first, last = parse_network(fields[0], where)
        try:
            country = country_code(fields[1], where, field="alpha2code", fold_case=True)
            region = subdivision_code(fields[2], country, where, field="region", fold_case=True)
        except ValueProblem as problem:
            report(source, problem)  # skipped and counted, or raised under strict
            continue
        record = NetworkRecord(
            country=country,
            subdivision=region,
            city=fields[3] or None,
            provider=provider,
            kinds=kinds,
        )
        if record != _EMPTY:
            yield entry(version, first, last, record)
