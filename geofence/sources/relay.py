"""Apple iCloud Private Relay egress ranges.

Apple publishes the egress addresses of iCloud Private Relay as an RFC 8805
geofeed (``prefix,country,region,city,postal``; region is the ISO 3166-2
code). Private Relay is a *location-preserving* relay: each egress range is
mapped to the coarse real location of the users behind it, so the country,
subdivision and city are kept, and the range is marked
:attr:`~geofence.kinds.NetworkKind.RELAY` (not VPN) with the provider named.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from geofence.kinds import NetworkKind
from geofence.sources._common import StrPath, dated_file_info, display, require_file
from geofence.sources.base import RangeEntry, Source
from geofence.sources.geofeed import read_geofeed

__all__ = ["APPLE_RELAY_URL", "relay_source"]

APPLE_RELAY_URL = "https://mask-api.icloud.com/egress-ip-ranges.csv"
"""Where Apple publishes the list."""


def relay_source(
    path: StrPath,
    *,
    name: str | None = None,
    provider: str = "Apple iCloud Private Relay",
    license: str = "",
    attribution: str = "",
    url: str = APPLE_RELAY_URL,
    data_date: dt.date | None = None,
) -> Source:
    """Describe an iCloud Private Relay egress list as a source.

    Args:
        path: The egress CSV file (``egress-ip-ranges.csv``).
        name: Source name; defaults to ``"icloud-private-relay"``.
        provider: Provider stated for every range.
        license: Licence of the data.
        attribution: Attribution text the licence requires.
        url: Where the list comes from; defaults to Apple's published URL.
        data_date: Date the list describes (the format carries none); also
            used as the version.

    Returns:
        The source: every range has ``kinds=RELAY``, the provider, and the
        country, subdivision and city that the relay preserves.

    Raises:
        SourceError: The file is missing or unreadable. Malformed lines raise
            when the source is read.
    """
    file = require_file(path)
    info = dated_file_info(
        file,
        name=name or "icloud-private-relay",
        format="relay",
        license=license,
        attribution=attribution,
        url=url,
        data_date=data_date,
    )
    shown = display(path)

    def read() -> Iterator[RangeEntry]:
        return read_geofeed(
            file, shown, kinds=NetworkKind.RELAY, provider=provider, source=info.name
        )

    return Source(info=info, read=read)
