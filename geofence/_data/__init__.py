"""Bundled data: the default snapshot, its licences and notices.

The default snapshot ships compressed (``default.gfs.xz``, standard-library
``lzma``) with its SHA-256 (``default.gfs.sha256``), so that the repository and
the wheel stay small. The first open expands it once into a cache directory
and verifies the digest; later opens (and other processes) map the cached
file. A plain ``default.gfs`` next to this file, if present (a checkout that
built one with ``data/build_default.py --plain``), is used as it is.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import tempfile
from pathlib import Path

from geofence.errors import SnapshotError

__all__ = ["cache_dir", "default_snapshot_file"]

HERE = Path(__file__).resolve().parent
PLAIN = HERE / "default.gfs"
PACKED = HERE / "default.gfs.xz"
DIGEST = HERE / "default.gfs.sha256"


def cache_dir() -> Path:
    """Where the expanded snapshot is kept.

    ``$GEOFENCE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/geofence``, else
    ``~/.cache/geofence``.
    """
    explicit = os.environ.get("GEOFENCE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "geofence"


def default_snapshot_file() -> Path:
    """Path of the default snapshot, expanding the compressed copy on first use.

    Returns:
        ``default.gfs`` beside this module if present, else the verified
        expansion of ``default.gfs.xz`` in :func:`cache_dir`.

    Raises:
        SnapshotError: The bundled files are missing or corrupt (a broken
            install), or the cache directory cannot be written.
    """
    if PLAIN.is_file():
        return PLAIN
    try:
        digest = DIGEST.read_text(encoding="ascii").split()[0]
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        raise SnapshotError(
            f"the bundled snapshot's digest {DIGEST} is missing or unreadable; reinstall geofence"
        ) from exc
    target = cache_dir() / f"default-{digest[:16]}.gfs"
    if target.is_file():
        return target  # Snapshot.open checks every byte against the header's own digest
    try:
        data = lzma.decompress(PACKED.read_bytes())
    except (OSError, lzma.LZMAError) as exc:
        raise SnapshotError(f"cannot expand the bundled snapshot {PACKED}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != digest:
        raise SnapshotError(
            f"the bundled snapshot {PACKED} does not expand to the recorded digest {digest}; "
            "reinstall geofence"
        )
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".default-", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)  # atomic: concurrent first opens write the same bytes
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise SnapshotError(
            f"cannot write the expanded default snapshot to {target.parent}: {exc}; set "
            "GEOFENCE_CACHE_DIR to a writable directory"
        ) from exc
    return target
