"""Edit snapshot bytes and recompute the checksum: corrupt files the checksum cannot catch.

Such files come from a buggy writer, or from anyone who recomputes the digest;
the reader must still refuse them (see :mod:`geofence.snapshot.invariants`).
"""

from __future__ import annotations

import hashlib

from geofence.snapshot.format import FORMAT_VERSION, HEADER, MAGIC, SECTION, SECTION_TAGS, align8


def section_spans(data: bytes) -> dict[bytes, tuple[int, int]]:
    """``tag -> (offset, length)`` from the section table."""
    count = HEADER.unpack_from(data, 0)[4]
    spans: dict[bytes, tuple[int, int]] = {}
    for k in range(count):
        tag, _, offset, length = SECTION.unpack_from(data, HEADER.size + SECTION.size * k)
        spans[tag] = (offset, length)
    return spans


def resum(body: bytes | bytearray) -> bytes:
    """The file with its header's digest recomputed over everything after the header."""
    out = bytearray(body)
    fields = list(HEADER.unpack_from(out, 0))
    fields[-1] = hashlib.sha256(out[HEADER.size :]).digest()
    HEADER.pack_into(out, 0, *fields)
    return bytes(out)


def with_section(data: bytes, tag: bytes, blob: bytes) -> bytes:
    """Replace a section by a blob of the same length and recompute the checksum."""
    offset, length = section_spans(data)[tag]
    if len(blob) != length:
        raise ValueError(f"section {tag!r} is {length} bytes, the new blob {len(blob)}")
    out = bytearray(data)
    out[offset : offset + length] = blob
    return resum(out)


def sections(data: bytes) -> dict[bytes, bytes]:
    """Every section's bytes, by tag."""
    return {tag: data[o : o + n] for tag, (o, n) in section_spans(data).items()}


def layout(parts: dict[bytes, bytes]) -> bytes:
    """A file from sections (in the spec's order), with a correct table and checksum."""
    offset = align8(HEADER.size + SECTION.size * len(SECTION_TAGS))
    table = bytearray()
    body = bytearray()
    for tag in SECTION_TAGS:
        blob = parts[tag]
        table += SECTION.pack(tag, 0, offset, len(blob))
        body += blob + bytes(align8(len(blob)) - len(blob))
        offset += align8(len(blob))
    head = table + bytes(align8(HEADER.size + len(table)) - HEADER.size - len(table))
    total = HEADER.size + len(head) + len(body)
    header = HEADER.pack(MAGIC, FORMAT_VERSION, 0, HEADER.size, len(SECTION_TAGS), 0, total, b"")
    return resum(header + bytes(head) + bytes(body))
