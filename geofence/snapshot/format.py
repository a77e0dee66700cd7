"""The snapshot file format: the one place that defines it, and its written spec.

A snapshot file is little-endian and laid out as::

    +--------------------------------------------------------------+
    | header (64 bytes)                                            |
    |   magic          8s   b"GEOFENCE"                            |
    |   format_version H    FORMAT_VERSION                          |
    |   flags          H    0 (no flags are defined; non-zero = bad)|
    |   header_size    I    64                                      |
    |   section_count  I    len(SECTION_TAGS)                       |
    |   reserved       I    0                                       |
    |   total_size     Q    size of the whole file in bytes         |
    |   digest         32s  SHA-256 of every byte after the header  |
    +--------------------------------------------------------------+
    | section table: section_count x 24 bytes                      |
    |   tag 4s | reserved I (0) | offset Q | length Q               |
    +--------------------------------------------------------------+
    | sections, each starting on an 8-byte boundary, zero padding  |
    |   META  UTF-8 JSON object: provenance and counts              |
    |   RECS  UTF-8 JSON array of records (see RECORD_FIELDS)       |
    |   V4ST  u32[n4]  first address of each IPv4 segment           |
    |   V4ID  i32[n4]  id of each IPv4 segment (see "Segment ids")   |
    |   V4IX  i32[65537] /16 bucket index into V4ST (see below)      |
    |   V6HI  u64[n6]  high 64 bits of each IPv6 segment start      |
    |   V6LO  u64[n6]  low 64 bits of each IPv6 segment start       |
    |   V6ID  i32[n6]  id of each IPv6 segment                        |
    |   V6IX  i32[65537] /16 bucket index into V6HI (see below)      |
    |   A4ST A4ID A4IX A6HI A6LO A6ID A6IX: the ASN partitions, laid  |
    |         out like V4ST..V6IX; ids index ASNS, gaps are -1      |
    |   ASNS  u32[na]  AS number of each ASN entry                    |
    |   ORGO  u32[na+1] offsets of each entry's organisation in ORGS  |
    |   ORGS  UTF-8 organisation names, concatenated                  |
    +--------------------------------------------------------------+

Segments partition each address space: the first starts at 0, starts are
strictly increasing, and a segment ends where the next begins (the last one at
the top of the space). So a lookup is one ``bisect`` and one index, with no end
check.

Segment ids: ``>= 0`` indexes the RECS array; ``-1`` marks addresses no source
covers; ``-2`` to ``-9`` are the special-purpose categories of
:data:`geofence.addr.SPECIAL_RANGES` (in :class:`geofence.kinds.SpecialRange`
order) and ``-16`` to ``-19`` the IPv6 tunnel prefixes of
:data:`geofence.addr.TUNNEL_RANGES` (in :class:`geofence.addr.TunnelKind`
order). The builder carves these ranges in, whatever the sources said there;
META["special_table"] names the table version used, and a reader with a
different table re-applies its own when opening (slower, still correct).

V4IX: for each /16 bucket ``p`` (0..65535, plus a sentinel), ``V4IX[p]`` is the
index of the segment containing the last address before bucket ``p``
(``0`` for ``p = 0``); the segment of any address in bucket ``p`` is then found
by bisecting ``V4ST`` between ``V4IX[p]`` and ``V4IX[p + 1]`` inclusive.
V6IX is the same over the top 16 bits of the IPv6 starts (``V6HI >> 48``).

The ASN table is a second partition of each address space, built from the
sources that only state AS numbers and organisations (``Source.asn_table``), so
that the many ASN boundaries do not multiply the records. ``A4ID``/``A6ID`` are
``-1`` (no ASN source speaks) or an index ``k`` into ``ASNS``; entry ``k``'s
organisation is ``ORGS[ORGO[k]:ORGO[k + 1]]`` (empty: none stated), decoded
only when a lookup asks for it. The special ranges are not carved into it.
A snapshot without ASN sources has one gap segment per family and empty
``ASNS``/``ORGS`` (``ORGO`` is ``[0]``).

The digest in the header is both the integrity check (any flipped or missing
byte changes it) and the snapshot's identity (:attr:`Snapshot.snapshot_id`).

Compatibility: a reader refuses files with a larger ``format_version`` ("built
by a newer geofence") and with a smaller one ("rebuild"); the version changes
whenever the byte layout or the meaning of a field changes.
"""

from __future__ import annotations

import struct
from typing import Final, Literal

__all__ = [
    "FORMAT_VERSION",
    "HEADER",
    "MAGIC",
    "RECORD_FIELDS",
    "SECTION",
    "SECTION_TAGS",
    "align8",
]

MAGIC: Final = b"GEOFENCE"
FORMAT_VERSION: Final = 3

#: Header: magic, format_version, flags, header_size, section_count, reserved,
#: total_size, digest.
HEADER: Final = struct.Struct("<8sHHIIIQ32s")
#: Section table entry: tag, reserved, offset, length.
SECTION: Final = struct.Struct("<4sIQQ")

#: The sections, in the order they must appear.
SECTION_TAGS: Final = (
    b"META",
    b"RECS",
    b"V4ST",
    b"V4ID",
    b"V4IX",
    b"V6HI",
    b"V6LO",
    b"V6ID",
    b"V6IX",
    b"A4ST",
    b"A4ID",
    b"A4IX",
    b"A6HI",
    b"A6LO",
    b"A6ID",
    b"A6IX",
    b"ASNS",
    b"ORGO",
    b"ORGS",
)

#: Each record in RECS is a JSON array with these fields in this order; ``sources``
#: is a list of indexes into META["sources"].
RECORD_FIELDS: Final = (
    "country",
    "subdivision",
    "registered_country",
    "city",
    "asn",
    "as_org",
    "provider",
    "kinds",
    "latitude",
    "longitude",
    "accuracy_km",
    "sources",
    "territory",
    "alt_country",
    "dispute",
)

#: Array item formats of the range sections (``array``/``memoryview`` type codes
#: with their sizes; the file is little-endian).
ARRAY_TYPES: Final[dict[bytes, tuple[Literal["I", "i", "Q"], int]]] = {
    b"V4ST": ("I", 4),
    b"V4ID": ("i", 4),
    b"V4IX": ("i", 4),
    b"V6HI": ("Q", 8),
    b"V6LO": ("Q", 8),
    b"V6ID": ("i", 4),
    b"V6IX": ("i", 4),
    b"A4ST": ("I", 4),
    b"A4ID": ("i", 4),
    b"A4IX": ("i", 4),
    b"A6HI": ("Q", 8),
    b"A6LO": ("Q", 8),
    b"A6ID": ("i", 4),
    b"A6IX": ("i", 4),
    b"ASNS": ("I", 4),
    b"ORGO": ("I", 4),
}


def align8(n: int) -> int:
    """Round ``n`` up to a multiple of 8."""
    return (n + 7) & ~7
