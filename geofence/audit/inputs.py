"""Reading logs: plain, gzip and zstd files and stdin, in blocks of complete lines.

Compression is recognised by the file's first bytes (not its name), so a
``.log`` that is really gzip, or a gzip on stdin, is read right. A log is read
in blocks of about a megabyte; each block handed on holds complete lines only.
A line longer than ``max_line`` bytes is not parsed: it is counted as
oversized with its line number, and reading goes on after it, so one huge line
costs no more memory than ``max_line``. A compressed stream that is truncated
or corrupt ends that source with a read error naming where it stopped; what
was read before is kept.
"""

from __future__ import annotations

import gzip
import os
import sys
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from functools import partial
from typing import IO, Any, Final, cast

__all__ = ["BLOCK", "MAX_LINE", "Block", "LogSource", "ReadProblem"]

#: Longest line parsed, in bytes; longer lines are counted as oversized.
MAX_LINE: Final = 64 * 1024

#: Bytes per block by default.
BLOCK: Final = 1 << 20
_GZIP_MAGIC: Final = b"\x1f\x8b"
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True, slots=True)
class Block:
    """Complete lines of one source, as read."""

    data: bytes
    """The lines' bytes, each line ending with ``\\n``."""

    first_line: int
    """Line number of the first line in its source (from 1)."""

    oversized: tuple[int, ...] = ()
    """Line numbers of lines longer than ``max_line`` left out of ``data`` (before it)."""

    @property
    def text(self) -> str:
        """The lines decoded from UTF-8 (undecodable bytes become U+FFFD)."""
        return self.data.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class ReadProblem:
    """A source that could not be read to its end."""

    source: str
    """The file name (``-`` for stdin)."""

    after_line: int
    """Lines read from it before the problem."""

    reason: str
    """What went wrong (truncated gzip, corrupt zstd frame, unreadable file...)."""


class LogSource:
    """One log: a path, or ``-`` for standard input.

    Args:
        name: The path or ``-``.
        max_line: Longest line parsed, in bytes.
        block_size: About how many bytes a block holds.
    """

    def __init__(self, name: str, *, max_line: int = MAX_LINE, block_size: int = BLOCK) -> None:
        self.name = name
        self.max_line = max_line
        self.block_size = block_size
        self.size: int | None = None
        """Bytes in the file as stored (``None`` for stdin): the progress bar's total."""
        self.problem: ReadProblem | None = None
        """Why reading stopped early, once :meth:`blocks` has finished."""
        self._raw: IO[bytes] | None = None
        self.compression = "none"

    def consumed(self) -> int:
        """Bytes of the stored (compressed) file read so far."""
        raw = self._raw
        if raw is None or raw.closed:
            return self.size or 0
        try:
            return raw.tell()
        except (OSError, ValueError):
            return 0

    def blocks(self) -> Iterator[Block]:
        """The log's complete lines, block by block; sets :attr:`problem` on a read error."""
        line = 1
        try:
            with self._open() as stream:
                for block in self._split(stream):
                    line = block.first_line + block.data.count(b"\n")
                    yield block
        except (OSError, EOFError, zlib.error, ValueError, RuntimeError) as exc:
            # gzip: EOFError (truncated), BadGzipFile (an OSError), zlib.error;
            # zstandard: ZstdError (a RuntimeError subclass... or ValueError); files: OSError.
            self.problem = ReadProblem(self.name, line - 1, _reason(exc, self.compression))
        finally:
            self._raw = None

    def _open(self) -> IO[bytes]:
        if self.name == "-":
            raw: Any = sys.stdin.buffer
        else:
            raw = open(self.name, "rb")  # noqa: SIM115 - closed by the returned stream
            self.size = os.fstat(raw.fileno()).st_size
        self._raw = raw
        head = _peek(raw)
        if head.startswith(_GZIP_MAGIC):
            self.compression = "gzip"
            return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
        if head.startswith(_ZSTD_MAGIC):
            self.compression = "zstd"
            try:
                import zstandard
            except ImportError:
                raw.close()
                raise RuntimeError(
                    "zstd-compressed; install the audit extra (pip install 'geofence[audit]')"
                ) from None
            return cast(IO[bytes], _Frames(raw, zstandard.ZstdDecompressor().decompressobj))
        return raw  # type: ignore[no-any-return]

    def _split(self, stream: IO[bytes]) -> Iterator[Block]:
        """Blocks of complete lines; lines over ``max_line`` left out and numbered."""
        limit = self.max_line
        carry = b""
        skipping = False  # inside an oversized line: drop bytes up to its newline
        line = 1  # number of the next line
        pending: list[int] = []  # oversized lines not yet reported
        read = _reader(stream, self.block_size)
        while True:
            data = read()  # a read error ends the source (see blocks()); a partial
            if not data:  # last line of a truncated stream is not a line
                break
            if skipping:
                newline = data.find(b"\n")
                if newline < 0:
                    continue
                data = data[newline + 1 :]
                skipping = False
                line += 1
            buf = carry + data
            end = buf.rfind(b"\n") + 1
            body, carry = buf[:end], buf[end:]
            if body:
                line = yield from self._emit(body, line, pending)
                pending = []
            if len(carry) > limit:
                carry = b""
                skipping = True
                pending.append(line)
        if carry:  # a last line without a newline
            line = yield from self._emit(carry + b"\n", line, pending)
            pending = []
        if pending:
            yield Block(b"", line, tuple(pending))

    def _emit(self, body: bytes, line: int, oversized: list[int]) -> Generator[Block, None, int]:
        """Blocks for ``body`` (lines numbered from ``line``); returns the next line number.

        Lines over the limit are left out; the text is cut around them so that
        every block's lines keep their true numbers.
        """
        limit = self.max_line
        if len(body) <= limit or not _has_longer(body, limit):
            yield Block(body, line, tuple(oversized))
            return line + body.count(b"\n")
        parts = body.split(b"\n")[:-1]
        kept: list[bytes] = []
        before = list(oversized)
        first = line
        for number, part in enumerate(parts, line):
            if len(part) <= limit:
                if not kept:
                    first = number
                kept.append(part)
                continue
            if kept:
                yield Block(_joined(kept), first, tuple(before))
                kept, before = [], []
            before.append(number)
        if kept:
            yield Block(_joined(kept), first, tuple(before))
        elif before:
            yield Block(b"", line + len(parts), tuple(before))
        return line + len(parts)


def _joined(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


class _Frames:
    """A readable stream over consecutive compressed frames that reports truncation.

    ``zstandard``'s own stream reader returns end-of-file when the input stops in
    the middle of a frame; this one raises :class:`EOFError` then, as ``gzip`` does,
    and turns the decompressor's own errors into :class:`ValueError`.

    Args:
        raw: The compressed file.
        new: Makes a decompressor object (``decompress``, ``eof``, ``unused_data``).
    """

    _CHUNK = 1 << 16

    def __init__(self, raw: IO[bytes], new: Callable[[], Any]) -> None:
        self._raw = raw
        self._new = new
        self._d = new()
        self._pending = False  # a frame has started and not ended

    def read1(self, size: int = -1) -> bytes:
        """Decompressed bytes of at least one chunk of input; ``b""`` at the end."""
        while True:
            chunk = self._raw.read(self._CHUNK)
            if not chunk:
                if self._pending:
                    raise EOFError("compressed stream ended in the middle of a frame")
                return b""
            try:
                out = self._d.decompress(chunk)
                while self._d.eof and self._d.unused_data:  # the next frame follows
                    rest = self._d.unused_data
                    self._d = self._new()
                    out += self._d.decompress(rest)
            except Exception as exc:  # zstandard.ZstdError has no narrower base
                raise ValueError(str(exc)) from exc
            self._pending = not self._d.eof
            if self._d.eof:
                self._d = self._new()
            if out:
                return bytes(out)

    def read(self, size: int = -1) -> bytes:
        """Same as :meth:`read1` (callers gather blocks themselves)."""
        return self.read1(size)

    def __enter__(self) -> _Frames:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()


def _reader(stream: IO[bytes], block: int) -> Callable[[], bytes]:
    """Read about a block of data.

    Compressed streams are read with ``read1`` (one read of the file per call),
    gathered until a block is full: a plain ``read`` of a block from a gzip
    stream that turns out truncated raises and loses everything it had
    decompressed in that call, while ``read1`` raises only on a call that has
    nothing more to give.
    """
    read1 = getattr(stream, "read1", None)
    if read1 is None:
        return partial(stream.read, block)

    def gather() -> bytes:
        parts: list[bytes] = []
        size = 0
        try:
            while size < block:
                part = read1(block - size)
                if not part:
                    break
                parts.append(part)
                size += len(part)
        except Exception as exc:
            if parts:  # hand on what was read; the next call raises
                stream_error[0] = exc
                return b"".join(parts)
            raise
        return b"".join(parts)

    stream_error: list[BaseException | None] = [None]

    def read() -> bytes:
        failed = stream_error[0]
        if failed is not None:
            stream_error[0] = None
            raise failed
        return gather()

    return read


def _has_longer(body: bytes, limit: int) -> bool:
    """Whether a line of ``body`` (lines ending with newlines) is longer than ``limit`` bytes.

    Steps from line start to line start by the last newline within ``limit`` bytes,
    so it reads the block with a few ``rfind`` calls, not a split into lines.
    """
    start, end = 0, len(body)
    while start < end:
        newline = body.rfind(b"\n", start, start + limit + 1)
        if newline < 0:
            return True
        start = newline + 1
    return False


def _peek(raw: Any) -> bytes:
    """The first bytes of a stream without consuming them (stdin included)."""
    peek = getattr(raw, "peek", None)
    if peek is not None:
        return bytes(peek(4)[:4])
    head: bytes = raw.read(4)
    raw.seek(0)
    return head


def _reason(exc: BaseException, compression: str) -> str:
    if isinstance(exc, EOFError):
        return f"truncated {compression} stream: {exc}"
    if isinstance(exc, (zlib.error, gzip.BadGzipFile)):
        return f"corrupt gzip data: {exc}"
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"corrupt {compression} data: {exc}" if compression != "none" else str(exc)
