"""How an opened snapshot holds its bytes: one private buffer, read-only views, no copies."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from geofence.engine import Geofence
from geofence.errors import SnapshotError
from geofence.snapshot import sections
from geofence.snapshot.format import ARRAY_TYPES
from geofence.snapshot.reader import Snapshot
from geofence.snapshot.sections import Sections, read_file
from geofence.testing import make_snapshot
from tests.snapshot.test_reader import _sample

ROOT = Path(__file__).resolve().parents[2]


def test_opened_columns_are_read_only_views(tmp_path: Path) -> None:
    """Every column of a file-backed snapshot is a read-only view: nothing can change it."""
    path = tmp_path / "s.gfs"
    path.write_bytes(_sample())
    snap = Snapshot.open(path)
    columns = [*snap.partitions, *snap.asn_table.partitions]
    columns += [snap.asn_table.asns, snap.asn_table.offsets]
    for column in columns:
        if sys.byteorder == "little":
            assert isinstance(column, memoryview)
            assert column.readonly
            with pytest.raises(TypeError):
                column[0] = 1
    assert snap.lookup("8.8.8.8").record is not None


def test_sections_cast_to_the_format_item_types() -> None:
    """Each range section is a column of its format's item type and item count."""
    data = _sample()
    sections = Sections(memoryview(data), "s.gfs")
    try:
        for tag, (code, size) in ARRAY_TYPES.items():
            column = sections.column(tag)
            assert column.itemsize == size
            assert len(column) == len(sections.views[tag]) // size
            if isinstance(column, memoryview):
                assert column.format == code
    finally:
        sections.release(columns=True)


def test_a_mutable_buffer_is_copied_before_it_is_checked() -> None:
    """from_bytes(bytearray) keeps a private copy: later writes to the bytearray change nothing."""
    data = bytearray(_sample())
    snap = Snapshot.from_bytes(data)
    before = [list(column) for column in snap.partitions]
    data[:] = bytes(len(data))  # also proves the bytearray is not exported (resizable)
    data.extend(b"more")
    assert [list(column) for column in snap.partitions] == before
    snap.verify()


def test_read_file_refuses_an_empty_file(tmp_path: Path) -> None:
    """An empty file is refused with advice, before any buffer is made."""
    path = tmp_path / "empty.gfs"
    path.write_bytes(b"")
    with pytest.raises(SnapshotError, match="empty"):
        read_file(str(path))


def test_read_file_returns_the_whole_file_read_only(tmp_path: Path) -> None:
    """The buffer holds the file's bytes and cannot be written through the view."""
    path = tmp_path / "s.gfs"
    path.write_bytes(_sample())
    view = read_file(str(path))
    assert view.readonly
    assert bytes(view) == _sample()


@pytest.mark.parametrize("huge_pages", [True, False], ids=["huge-pages", "populated"])
def test_both_kinds_of_buffer_hold_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, huge_pages: bool
) -> None:
    """With or without the huge-page advice, the buffer holds the file and opens alike."""
    if not huge_pages:
        monkeypatch.setattr(sections, "_HUGE_PAGES", None)
    elif sections._HUGE_PAGES is None:
        pytest.skip("this platform has no MADV_HUGEPAGE")
    path = tmp_path / "s.gfs"
    path.write_bytes(_sample())
    assert bytes(read_file(str(path))) == _sample()
    assert Snapshot.open(path).digest == Snapshot.from_bytes(_sample()).digest


def test_a_refused_open_leaves_nothing_exported(tmp_path: Path) -> None:
    """A corrupt file is refused whole, and its views are released (the buffer can go)."""
    data = bytearray(_sample())
    data[-1] ^= 0xFF
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        Snapshot.from_bytes(data)
    data.extend(b"x")  # a bytearray still exported by a view could not grow


def test_collecting_cycles_through_snapshots_and_engines_is_safe() -> None:
    """Garbage cycles holding an opened snapshot, its columns and an engine are collected.

    The compiled core holds buffers of the snapshot's memoryviews; the collector
    must never clear a memoryview while a buffer of it is held (that crashed the
    interpreter). Run in a child so that a crash fails this test, not the run.
    """
    script = textwrap.dedent(
        """
        import gc
        from geofence.engine import Geofence
        from geofence.testing import make_snapshot
        for _ in range(20):
            snap = make_snapshot({"8.8.8.0/24": {"country": "US"}})
            gf = Geofence(snap, "allow-all")
            holder = [snap, gf, snap.partitions, snap.asn_table]
            holder.append(holder)  # a cycle: only the collector frees it
            del snap, gf, holder
            gc.collect()
        print("collected")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "collected" in done.stdout


def test_engines_keep_deciding_after_their_snapshot_is_dropped() -> None:
    """The buffer lives as long as any engine uses its views."""
    gf = Geofence(make_snapshot({"8.8.8.0/24": {"country": "US"}}), "allow-all", max_age=None)
    gc.collect()
    assert gf.decide("8.8.8.8").action.value == "allow"
