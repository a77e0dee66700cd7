"""Tests of geofence.sources.containers: gzip, Zstandard and block containers, read alike."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest
import zstandard

from geofence.errors import SourceError
from geofence.sources import open_source
from geofence.sources.containers import compression_of, materialize, read_chunks

from ._helpers import compressed_copies, entries, write_blocks, write_text

DATA = bytes(range(256)) * 40 + b"tail"

CSV = "1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.3.255,CN\n2001:200::,2001:200:ffff:ffff::,JP\n"
GEOFEED = "192.0.2.0/24,UA,UA-46,Lviv,\n2001:db8::/32,RU,,,\n"
RIR = (
    "2|ripencc|20240501|3|19830705|20240430|+0200\n"
    "ripencc|*|ipv4|*|2|summary\n"
    "ripencc|*|ipv6|*|1|summary\n"
    "ripencc|UA|ipv4|193.0.0.0|256|19930901|allocated|a\n"
    "ripencc|RU|ipv4|193.0.1.0|256|19930901|assigned|b\n"
    "ripencc|DE|ipv6|2001:600::|32|19990826|allocated|c\n"
)
AWS = {
    "syncToken": "1714564800",
    "createDate": "2024-05-01-12-00-00",
    "prefixes": [{"ip_prefix": "3.5.140.0/22", "region": "x", "service": "EC2"}],
    "ipv6_prefixes": [],
}


@pytest.mark.parametrize("kind", ["gzip", "zstd", "blocks"])
def test_compressed_files_read_back(tmp_path: Path, kind: str) -> None:
    """Each format is recognised by its magic bytes and decompresses to the original."""
    plain = tmp_path / "data.bin"
    plain.write_bytes(DATA)
    path = compressed_copies(plain)[kind]
    assert compression_of(path) == kind
    assert b"".join(read_chunks(path)) == DATA
    with materialize(path) as raw:
        assert raw.read_bytes() == DATA
    assert not raw.exists()  # the temporary copy is removed


def test_plain_file_named_gz_is_read_as_it_is(tmp_path: Path) -> None:
    """The format comes from the content, never from the file name."""
    path = tmp_path / "looks.gz"
    path.write_bytes(DATA)
    assert compression_of(path) is None
    with materialize(path) as raw:
        assert raw == path
    assert b"".join(read_chunks(path)) == DATA


@pytest.mark.parametrize("kind", ["gzip", "zstd", "blocks"])
def test_truncated_compressed_files_are_source_errors(tmp_path: Path, kind: str) -> None:
    """A compressed file cut short raises SourceError, never a silent short read."""
    plain = tmp_path / "data.bin"
    plain.write_bytes(DATA)
    path = compressed_copies(plain)[kind]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 9])
    with pytest.raises(SourceError, match=r"data\.bin"):
        b"".join(read_chunks(path))


def test_corrupt_block_is_a_source_error(tmp_path: Path) -> None:
    """A block whose bytes are damaged is reported with its number."""
    path = write_blocks(tmp_path / "x.bz", DATA, block_size=1024)
    data = bytearray(path.read_bytes())
    head = 20 + 4 * -(-len(DATA) // 1024)  # header and one length per block
    data[head + 4 : head + 12] = b"\xff" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="block 0"):
        b"".join(read_chunks(path))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (struct.pack(">8sIII", b"DETBLK01", 0, 1, 10), "inconsistent"),
        (struct.pack(">8sIII", b"DETBLK01", 64, 3, 64), "inconsistent"),
        (struct.pack(">8sIII", b"DETBLK01", 64, 2, 100) + b"\x00\x00", "truncated block index"),
        (b"DETBLK01\x00\x00", "truncated block container header"),
    ],
)
def test_broken_block_headers_are_source_errors(
    tmp_path: Path, header: bytes, message: str
) -> None:
    """Inconsistent or cut headers and indexes are refused before any block is read."""
    path = tmp_path / "x.bz"
    path.write_bytes(header)
    with pytest.raises(SourceError, match=message):
        b"".join(read_chunks(path))


def test_block_holding_the_wrong_size_is_refused(tmp_path: Path) -> None:
    """A block that decompresses to fewer bytes than the header promises is refused."""
    blob = zstandard.ZstdCompressor().compress(b"short")
    head = struct.pack(">8sIII", b"DETBLK01", 64, 1, 64) + struct.pack(">I", len(blob))
    path = tmp_path / "x.bz"
    path.write_bytes(head + blob)
    with pytest.raises(SourceError, match="holds 5 bytes, expected 64"):
        b"".join(read_chunks(path))


@pytest.mark.parametrize(
    ("kind", "name", "text"),
    [
        ("csv", "ranges.csv", CSV),
        ("geofeed", "feed.csv", GEOFEED),
        ("rir", "delegated-ripencc-extended-latest", RIR),
        ("aws", "ip-ranges.json", json.dumps(AWS)),
    ],
)
@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_text_sources_read_compressed_files(
    tmp_path: Path, kind: str, name: str, text: str, compression: str
) -> None:
    """CSV, geofeed, RIR and cloud JSON sources read .gz and .zst files transparently."""
    plain = write_text(tmp_path / name, text)
    packed = compressed_copies(plain)[compression]
    expected = entries(open_source(f"{kind}:{plain}"))
    assert expected
    assert entries(open_source(f"{kind}:{packed}")) == expected


def test_wrong_encoding_inside_a_compressed_file(tmp_path: Path) -> None:
    """Latin-1 text inside a gzip file is reported as not UTF-8, with the line."""
    path = tmp_path / "ranges.csv.gz"
    path.write_bytes(gzip.compress("1.0.0.0,1.0.0.255,AU\n# Zürich\n".encode("latin-1")))
    with pytest.raises(SourceError, match=r"ranges.csv.gz:\d+: not valid UTF-8"):
        entries(open_source(f"csv:{path}"))


def test_truncated_compressed_text_source(tmp_path: Path) -> None:
    """A truncated .gz text source fails with SourceError instead of losing its tail silently."""
    data = gzip.compress(CSV.encode() * 50)
    path = tmp_path / "ranges.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="corrupt or truncated"):
        entries(open_source(f"csv:{path}"))
