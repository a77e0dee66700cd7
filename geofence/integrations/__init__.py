"""Web integrations: ASGI, WSGI, Django middleware, a Flask extension, a FastAPI dependency.

The framework-neutral pieces are re-exported here; importing this package
imports no web framework. Framework modules are imported by name:
``geofence.integrations.asgi`` and ``geofence.integrations.wsgi`` (no
framework needed), ``geofence.integrations.fastapi``,
``geofence.integrations.flask`` and ``geofence.integrations.django``.
See ``docs/middleware.md``.
"""

from geofence.integrations.asgi import GeofenceMiddleware
from geofence.integrations.audit import AuditLogger, flush_audit_queue
from geofence.integrations.config import FailMode, GeofenceConfig, GeofenceOptions
from geofence.integrations.gate import Gate, Verdict
from geofence.integrations.metrics import PrometheusMetrics
from geofence.integrations.replies import Reply
from geofence.integrations.request import (
    AuditFieldsHook,
    ChallengeHook,
    RequestInfo,
    RouterHook,
    SubjectHook,
)
from geofence.integrations.routing import RouteTable
from geofence.integrations.wsgi import GeofenceWSGIMiddleware

__all__ = [
    "AuditFieldsHook",
    "AuditLogger",
    "ChallengeHook",
    "FailMode",
    "Gate",
    "GeofenceConfig",
    "GeofenceMiddleware",
    "GeofenceOptions",
    "GeofenceWSGIMiddleware",
    "PrometheusMetrics",
    "Reply",
    "RequestInfo",
    "RouteTable",
    "RouterHook",
    "SubjectHook",
    "Verdict",
    "flush_audit_queue",
]
