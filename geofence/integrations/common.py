"""The names the integrations share, gathered in one place.

The pieces live in small modules, one concept each: :mod:`.gate` (the
request path), :mod:`.config` (settings), :mod:`.request` (the hooks' view),
:mod:`.replies` (451 and the challenge), :mod:`.clients` (client resolution),
:mod:`.paths` (prefix matching), :mod:`.audit`, :mod:`.metrics` and
:mod:`.tracing`. This module re-exports them for code written against it.
"""

from geofence.integrations.audit import AuditLogger
from geofence.integrations.config import (
    BodyFormat,
    FailMode,
    GeofenceConfig,
    GeofenceOptions,
    resolve_config,
)
from geofence.integrations.gate import DECISION_ERROR, NO_CLIENT_ADDRESS, Gate, Verdict
from geofence.integrations.metrics import PrometheusMetrics
from geofence.integrations.replies import Reply, reason_code
from geofence.integrations.request import (
    AuditFieldsHook,
    ChallengeHook,
    HeaderSource,
    RequestInfo,
    RouterHook,
    SubjectHook,
)

__all__ = [
    "DECISION_ERROR",
    "NO_CLIENT_ADDRESS",
    "AuditFieldsHook",
    "AuditLogger",
    "BodyFormat",
    "ChallengeHook",
    "FailMode",
    "Gate",
    "GeofenceConfig",
    "GeofenceOptions",
    "HeaderSource",
    "PrometheusMetrics",
    "Reply",
    "RequestInfo",
    "RouterHook",
    "SubjectHook",
    "Verdict",
    "reason_code",
    "resolve_config",
]
