"""Snapshots: the compiled, versioned, immutable IP data (see ``docs/format.md``).

Only :mod:`geofence.snapshot.reader` is needed at request time; the builder
(:mod:`geofence.snapshot.build`) and the source adapters are build-time only.
"""

from geofence.snapshot.reader import Snapshot, default_snapshot_path

__all__ = ["Snapshot", "default_snapshot_path"]
