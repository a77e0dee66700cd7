"""geofence: jurisdiction rules for API requests, fast and auditable.

Importing this package is cheap: no data is loaded until you open a snapshot
(``Snapshot.default()`` or ``Snapshot.open(path)``).
"""

__version__ = "0.1.0"
