"""The interface every source adapter implements (build time only).

An adapter reads one raw format and yields :class:`RangeEntry` values: a range
of addresses of one family and the fields that source states about it. The
builder (:mod:`geofence.snapshot.build`) merges any number of sources.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from geofence.records import NetworkRecord

__all__ = ["RangeEntry", "Source", "SourceInfo"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceInfo:
    """Provenance of one source, stored in the snapshot and shown by ``data info``."""

    name: str
    """Short unique name used in records' provenance (``"dbip-country-lite"``)."""

    format: str
    """Adapter that read it (``"mmdb"``, ``"csv"``, ``"geofeed"``, ...)."""

    version: str = ""
    """Version of the data as its publisher names it (a date, a serial, a package version)."""

    license: str = ""
    """Licence of the data (SPDX id where one exists, e.g. ``"CC-BY-4.0"``)."""

    attribution: str = ""
    """Attribution text the licence requires, shown wherever results are displayed."""

    url: str = ""
    """Where the data comes from."""

    data_date: dt.date | None = None
    """Date the data describes (publication date), used for the data-age guard."""

    sha256: str = ""
    """SHA-256 of the raw input file, when it came from one file."""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready mapping (dates as ISO strings)."""
        return {
            "name": self.name,
            "format": self.format,
            "version": self.version,
            "license": self.license,
            "attribution": self.attribution,
            "url": self.url,
            "data_date": self.data_date.isoformat() if self.data_date else None,
            "sha256": self.sha256,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SourceInfo:
        """Inverse of :meth:`as_dict`."""
        date = data.get("data_date")
        return cls(
            name=str(data["name"]),
            format=str(data.get("format", "")),
            version=str(data.get("version", "")),
            license=str(data.get("license", "")),
            attribution=str(data.get("attribution", "")),
            url=str(data.get("url", "")),
            data_date=dt.date.fromisoformat(date) if isinstance(date, str) else None,
            sha256=str(data.get("sha256", "")),
        )


@dataclass(frozen=True, slots=True)
class RangeEntry:
    """One statement of a source: addresses ``first..last`` (inclusive) have ``record``."""

    version: int
    """4 or 6."""

    first: int
    """First address as an integer."""

    last: int
    """Last address as an integer (>= ``first``)."""

    record: NetworkRecord
    """Fields stated by the source; ``record.sources`` is ignored (the builder sets it)."""


@dataclass(frozen=True, kw_only=True)
class Source:
    """A source ready for the builder: its provenance and a way to read its entries.

    ``entries`` is a callable so that a source can be described cheaply and read
    once, when the builder runs.
    """

    info: SourceInfo
    """Provenance."""

    read: Callable[[], Iterable[RangeEntry]] = field(repr=False)
    """Returns the entries; may be called more than once."""

    asn_table: bool = False
    """Whether the builder puts this source's ``asn``/``as_org`` into the snapshot's ASN
    table (:mod:`geofence.snapshot.asn`) instead of merging it into the records; its
    other fields are ignored."""

    def entries(self) -> Iterator[RangeEntry]:
        """Iterate the entries of this source."""
        yield from self.read()
