"""Tor exit addresses.

Two formats published by the Tor Project are read, and told apart by content:

* the **bulk exit list** (``torbulkexitlist``): one IP address per line;
  blank lines and ``#`` comments are allowed;
* the **TorDNSEL exit list** (``exit-addresses``): blocks of keyword lines::

      ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E
      Published 2024-05-01 12:34:56
      LastStatus 2024-05-01 13:00:00
      ExitAddress 192.0.2.10 2024-05-01 13:05:44

  where every ``ExitAddress`` line gives one exit address and when it was
  seen. The latest of those dates is the source's ``data_date``.

Every address is stated once, as a single-address range with
``kinds=TOR`` and ``provider="Tor"``.
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
    dated_file_info,
    display,
    entry,
    iter_lines,
    parse_address_text,
    require_file,
    show,
)
from geofence.sources.base import RangeEntry, Source

__all__ = ["TOR_BULK_EXIT_LIST_URL", "TOR_EXIT_ADDRESSES_URL", "tor_exit_source"]

TOR_BULK_EXIT_LIST_URL = "https://check.torproject.org/torbulkexitlist"
"""Where the Tor Project publishes the bulk exit list."""

TOR_EXIT_ADDRESSES_URL = "https://check.torproject.org/exit-addresses"
"""Where the Tor Project publishes the TorDNSEL exit list."""

_KEYWORDS = frozenset({"ExitNode", "Published", "LastStatus", "ExitAddress"})


def tor_exit_source(
    path: StrPath,
    *,
    name: str | None = None,
    provider: str = "Tor",
    license: str = "",
    attribution: str = "",
    url: str | None = None,
    data_date: dt.date | None = None,
) -> Source:
    """Describe a Tor exit list (bulk list or ``exit-addresses``) as a source.

    The file is scanned now to tell the format and, for ``exit-addresses``,
    to find the data date.

    Args:
        path: The exit list file.
        name: Source name; defaults to ``"tor-exits"``.
        provider: Provider stated for every address.
        license: Licence of the data.
        attribution: Attribution text the licence requires.
        url: Where the list comes from; defaults to the Tor Project's URL for
            the detected format.
        data_date: Date the list describes; defaults to the latest
            ``ExitAddress`` date of an ``exit-addresses`` file (the bulk list
            carries none).

    Returns:
        The source.

    Raises:
        SourceError: The file is missing, unreadable or malformed.
    """
    file = require_file(path)
    shown = display(path)
    dnsel, latest = _scan(file, shown)
    info = dated_file_info(
        file,
        name=name or "tor-exits",
        format="tor",
        license=license,
        attribution=attribution,
        url=url
        if url is not None
        else (TOR_EXIT_ADDRESSES_URL if dnsel else TOR_BULK_EXIT_LIST_URL),
        data_date=data_date or latest,
    )
    record = NetworkRecord(kinds=NetworkKind.TOR, provider=provider or None)

    def read() -> Iterator[RangeEntry]:
        seen: set[tuple[int, int]] = set()
        for version, value in _addresses(file, shown, dnsel=dnsel):
            if (version, value) not in seen:
                seen.add((version, value))
                yield entry(version, value, value, record)

    return Source(info=info, read=read)


def _scan(file: Path, shown: str) -> tuple[bool, dt.date | None]:
    """Detect the format and find the latest ExitAddress date."""
    dnsel = False
    latest: dt.date | None = None
    for _lineno, line in iter_lines(file):
        keyword = line.split(maxsplit=1)[0] if line.strip() else ""
        if keyword in _KEYWORDS:
            dnsel = True
            break
    if dnsel:
        for lineno, line in iter_lines(file):
            parsed = _dnsel_line(line, f"{shown}:{lineno}")
            if parsed is not None:
                seen = parsed[2]
                latest = seen if latest is None or seen > latest else latest
    return dnsel, latest


def _dnsel_line(line: str, where: str) -> tuple[int, int, dt.date] | None:
    """Parse one exit-addresses line: the address and date of an ExitAddress line."""
    parts = line.split()
    if not parts:
        return None
    if parts[0] not in _KEYWORDS:
        raise SourceError(f"{where}: unknown keyword {show(parts[0])} in an exit-addresses file")
    if parts[0] != "ExitAddress":
        return None
    if len(parts) != 4:
        raise SourceError(
            f"{where}: expected 'ExitAddress <address> <date> <time>', got {show(line)}"
        )
    version, value = parse_address_text(parts[1], where)
    try:
        seen = dt.datetime.strptime(f"{parts[2]} {parts[3]}", "%Y-%m-%d %H:%M:%S")
    except ValueError as exc:
        raise SourceError(
            f"{where}: {show(parts[2] + ' ' + parts[3])} is not a 'YYYY-MM-DD hh:mm:ss' time"
        ) from exc
    return version, value, seen.date()


def _addresses(file: Path, shown: str, *, dnsel: bool) -> Iterator[tuple[int, int]]:
    for lineno, line in iter_lines(file):
        where = f"{shown}:{lineno}"
        if dnsel:
            parsed = _dnsel_line(line, where)
            if parsed is not None:
                yield parsed[0], parsed[1]
            continue
        text = line.split("#", 1)[0].strip()
        if text:
            yield parse_address_text(text, where)
