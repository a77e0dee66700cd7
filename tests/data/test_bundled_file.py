"""Tests of how the bundled snapshot ships: compressed, expanded once into a cache."""

from __future__ import annotations

import hashlib
import lzma
import threading
from pathlib import Path

import pytest

import geofence._data as bundled
from geofence.errors import SnapshotError
from geofence.snapshot.reader import Snapshot


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the bundled files in a temporary package directory and cache."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name in ("default.gfs.xz", "default.gfs.sha256"):
        (pkg / name).write_bytes((Path(bundled.__file__).parent / name).read_bytes())
    monkeypatch.setattr(bundled, "PLAIN", pkg / "default.gfs")
    monkeypatch.setattr(bundled, "PACKED", pkg / "default.gfs.xz")
    monkeypatch.setattr(bundled, "DIGEST", pkg / "default.gfs.sha256")
    monkeypatch.setenv("GEOFENCE_CACHE_DIR", str(tmp_path / "cache"))
    return pkg


def test_first_open_expands_and_verifies(package: Path, tmp_path: Path) -> None:
    """The first call writes the verified expansion; later calls reuse it."""
    path = bundled.default_snapshot_file()
    assert path.parent == tmp_path / "cache"
    digest = (package / "default.gfs.sha256").read_text(encoding="ascii").split()[0]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    mtime = path.stat().st_mtime_ns
    assert bundled.default_snapshot_file() == path
    assert path.stat().st_mtime_ns == mtime
    assert Snapshot.open(path).records


def test_plain_file_wins(package: Path) -> None:
    """A plain default.gfs beside the package (a local rebuild) is used as it is."""
    (package / "default.gfs").write_bytes(b"x")
    assert bundled.default_snapshot_file() == package / "default.gfs"


def test_corrupt_compressed_file_is_refused(package: Path) -> None:
    """A damaged .xz is a SnapshotError naming the file, and nothing is cached."""
    blob = bytearray((package / "default.gfs.xz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (package / "default.gfs.xz").write_bytes(bytes(blob))
    with pytest.raises(SnapshotError, match=r"default\.gfs\.xz"):
        bundled.default_snapshot_file()


def test_wrong_digest_is_refused(package: Path) -> None:
    """An .xz that expands to other bytes than the recorded digest is refused."""
    (package / "default.gfs.xz").write_bytes(lzma.compress(b"not the snapshot"))
    with pytest.raises(SnapshotError, match="recorded digest"):
        bundled.default_snapshot_file()


def test_missing_digest_is_refused(package: Path) -> None:
    """Without the digest file the install is broken, said plainly."""
    (package / "default.gfs.sha256").unlink()
    with pytest.raises(SnapshotError, match="reinstall"):
        bundled.default_snapshot_file()


def test_unwritable_cache_is_a_clear_error(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache directory that cannot be created names GEOFENCE_CACHE_DIR."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("GEOFENCE_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(SnapshotError, match="GEOFENCE_CACHE_DIR"):
        bundled.default_snapshot_file()


def test_concurrent_first_opens_agree(package: Path) -> None:
    """Threads expanding at the same time all get the same, complete file."""
    results: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(bundled.default_snapshot_file())
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(set(results)) == 1
    assert Snapshot.open(results[0]).records
