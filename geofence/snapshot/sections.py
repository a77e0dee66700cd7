"""The bytes of a snapshot in memory: read privately, checked whole, cut into typed views.

Opening a snapshot reads the file once into a private anonymous mapping and
never maps the file itself: a file rewritten in place under a mapping
(``cp new.gfs live.gfs``) raises ``SIGBUS`` on the next access past its new end,
which kills the process, while a read that races a rewrite only gets torn bytes,
which the checksum refuses (``docs/reliability.md``). The mapping is private
and anonymous, so nothing outside this process can change it, pages are shared
copy-on-write with forked workers, and the memory goes back to the system when
the last view of it is released. On Linux it asks for transparent huge pages,
which halve the cost of reading the file (fewer, larger page faults).

The range sections are not copied out of that buffer: each becomes a read-only
``memoryview`` cast to its item type (on little-endian hosts, the file's byte
order), which the pure-Python search and the compiled core read as they read an
``array``. Only the header, the section table and the checksum are checked
here; what the sections hold is checked by the reader before any search runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import sys
from array import array
from typing import Final

from geofence.errors import SnapshotError
from geofence.snapshot.format import (
    ARRAY_TYPES,
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    SECTION,
    SECTION_TAGS,
    align8,
)
from geofence.snapshot.partition import Column

__all__ = ["Sections", "read_file"]

#: Advice for the private buffer where the platform has it (Linux): transparent
#: huge pages, so that the read faults in a few 2 MiB pages rather than thousands
#: of 4 KiB ones (5-8 ms instead of 11-14 ms for the bundled 25 MB snapshot).
_HUGE_PAGES: Final[int | None] = getattr(mmap, "MADV_HUGEPAGE", None)
#: Without that advice: populate the pages in one call rather than one fault each.
_POPULATE: Final[int] = getattr(mmap, "MAP_POPULATE", 0)


def _fail(what: str, name: str) -> SnapshotError:
    return SnapshotError(f"{name}: {what}")


def read_file(name: str) -> memoryview:
    """Read a whole snapshot file into a private buffer.

    Args:
        name: The file.

    Returns:
        A read-only view of the buffer (the only reference to it).

    Raises:
        SnapshotError: The file is empty, unreadable, or shrank while it was read.
    """
    try:
        # Buffered: its readinto reads straight into the buffer and, unlike one raw
        # read, goes on until the buffer is full or the file ends.
        with open(name, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if not size:
                raise _fail("file is empty; rebuild it with `geofence data build`", name)
            buffer = _private_buffer(size)
            try:
                got = fh.readinto(buffer)
            except BaseException:
                buffer.close()
                raise
    except OSError as exc:
        raise SnapshotError(f"{name}: cannot read snapshot: {exc.strerror or exc}") from exc
    if got != size:  # the file shrank while it was read
        buffer.close()
        raise _fail(
            f"truncated: read {got} of {size} bytes; the file is changing "
            "(replace it atomically, see docs/reliability.md)",
            name,
        )
    return memoryview(buffer).toreadonly()


def _private_buffer(size: int) -> mmap.mmap:
    """Anonymous private memory of ``size`` bytes (``fileno=-1`` adds ``MAP_ANONYMOUS``)."""
    if sys.platform == "win32":  # no flags there; -1 is still an anonymous mapping
        return mmap.mmap(-1, size)
    if _HUGE_PAGES is None:
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | _POPULATE)
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    with contextlib.suppress(OSError):  # a kernel without huge pages: plain pages then
        buffer.madvise(_HUGE_PAGES)
    return buffer


class Sections:
    """The checked header and section table of a snapshot, and a view of each section.

    Args:
        view: The whole snapshot (read-only; its memory must not change while
            any view cut from it is in use).
        name: Where the bytes come from, for error messages.

    Raises:
        SnapshotError: Bad magic, another format version, an unknown flag, a
            size that is not the file's, a checksum mismatch, or a section table
            that does not tile the file.
    """

    __slots__ = ("columns", "digest", "name", "views")

    def __init__(self, view: memoryview, name: str) -> None:
        self.name = name
        self.views: dict[bytes, memoryview] = {}
        self.columns: list[memoryview] = []  # handed out by column() and blob()
        self.digest = self._check_header(view)
        count = len(SECTION_TAGS)
        expected = align8(HEADER.size + SECTION.size * count)
        for k, want in enumerate(SECTION_TAGS):
            tag, res, offset, length = SECTION.unpack_from(view, HEADER.size + SECTION.size * k)
            if tag != want or res or offset != expected or offset + length > len(view):
                raise _fail(f"corrupt section table at entry {k} ({tag!r})", name)
            self.views[tag] = view[offset : offset + length]
            expected = align8(offset + length)
        if expected != len(view):
            raise _fail("corrupt section table (sections do not fill the file)", name)

    def _check_header(self, view: memoryview) -> str:
        name = self.name
        if len(view) < HEADER.size:
            raise _fail(
                f"truncated: {len(view)} bytes is shorter than the {HEADER.size}-byte header", name
            )
        magic, version, flags, header_size, count, reserved, total, digest = HEADER.unpack_from(
            view, 0
        )
        if magic != MAGIC:
            raise _fail("not a geofence snapshot (bad magic number)", name)
        if version > FORMAT_VERSION:
            raise _fail(
                f"format version {version} was written by a newer geofence (this one reads "
                f"version {FORMAT_VERSION}); upgrade geofence",
                name,
            )
        if version != FORMAT_VERSION:
            raise _fail(
                f"format version {version} is no longer supported (this geofence reads "
                f"version {FORMAT_VERSION}); rebuild the snapshot with `geofence data build`",
                name,
            )
        if flags or reserved or header_size != HEADER.size or count != len(SECTION_TAGS):
            raise _fail("corrupt header (unknown flags, size or section count)", name)
        if total != len(view):
            what = "truncated" if total > len(view) else "has trailing bytes"
            raise _fail(
                f"{what}: header says {total} bytes, file has {len(view)}; re-download or rebuild",
                name,
            )
        # SHA-256 of every byte after the header: the integrity check and the identity.
        if hashlib.sha256(view[HEADER.size :]).digest() != digest:
            raise _fail("checksum mismatch: the file is corrupt; re-download or rebuild it", name)
        return str(digest.hex())

    def column(self, tag: bytes) -> Column:
        """The items of a range section (see ``ARRAY_TYPES``), without a copy where possible.

        Raises:
            SnapshotError: The section's length is not a whole number of items.
        """
        code, size = ARRAY_TYPES[tag]
        blob = self.views[tag]
        if len(blob) % size:
            raise _fail(f"section {tag.decode()} has a partial item", self.name)
        if sys.byteorder == "little":
            column = blob.cast(code)
            self.columns.append(column)
            return column
        swapped = array(code)  # the file is little-endian: a big-endian host swaps a copy
        swapped.frombytes(blob)
        swapped.byteswap()
        return swapped

    def blob(self, tag: bytes) -> memoryview:
        """The bytes of a section, as a view that stays valid after :meth:`release`."""
        part = self.views[tag][:]
        self.columns.append(part)
        return part

    def release(self, *, columns: bool = False) -> None:
        """Release the section views, and with ``columns`` the columns cut from them too.

        The columns stay valid without ``columns`` (they are views of the
        buffer, not of the section views); releasing them as well lets the
        buffer go at once when a snapshot is refused.
        """
        for part in (*self.views.values(), *(self.columns if columns else ())):
            part.release()
