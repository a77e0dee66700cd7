"""Decide at the edge: export a compiled policy to nginx, HAProxy, nftables and CIDR lists.

The export is made from the compiled verdict table (the decisions
:meth:`geofence.Geofence.decide` returns without a context), never by
evaluating addresses one by one; see ``docs/edge.md``. The same package reviews
changes (:func:`diff`) and runs expected decisions (:func:`run_cases`).
"""

from __future__ import annotations

from geofence.export.api import (
    NGINX_STYLES,
    EdgeExport,
    ExportError,
    compile_for_edge,
    explain,
    export,
    export_table,
    load_compiled,
    write_text_atomic,
)
from geofence.export.cases import Case, CaseResult, load_cases, run_cases
from geofence.export.diff import Change, ChangedRange, PolicyDiff, diff
from geofence.export.formats import FORMATS, Listing
from geofence.export.table import ContextRule, Partition, Verdict, VerdictTable, verdict_table

__all__ = [
    "FORMATS",
    "NGINX_STYLES",
    "Case",
    "CaseResult",
    "Change",
    "ChangedRange",
    "ContextRule",
    "EdgeExport",
    "ExportError",
    "Listing",
    "Partition",
    "PolicyDiff",
    "Verdict",
    "VerdictTable",
    "compile_for_edge",
    "diff",
    "explain",
    "export",
    "export_table",
    "load_cases",
    "load_compiled",
    "run_cases",
    "verdict_table",
    "write_text_atomic",
]
