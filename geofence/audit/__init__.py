"""Traffic audits: access logs in, decisions and a report out (see ``docs/audit.md``).

``geofence audit LOG... --policy P`` is the command line; :func:`run_audit` is
the same in Python. For logs too large for one machine, the scale-out recipes
in ``docs/audit.md`` run :func:`geofence.batch_arrow.decide_arrow` inside
DuckDB, Polars, Dask or Spark.

This package is not the per-request audit line of the middleware
(:class:`geofence.integrations.AuditLogger`); it reads logs after the fact.
"""

from __future__ import annotations

from geofence.audit.formats import FORMATS, FieldNames, LineParser
from geofence.audit.run import AuditOptions, Auditor, run_audit

__all__ = ["FORMATS", "AuditOptions", "Auditor", "FieldNames", "LineParser", "run_audit"]
