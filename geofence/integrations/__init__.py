"""Web integrations: ASGI, WSGI, Django middleware and a FastAPI dependency.

The framework-neutral pieces are re-exported here; importing this package
imports no web framework. Framework modules are imported by name:
``geofence.integrations.asgi`` and ``geofence.integrations.wsgi`` (no
framework needed), ``geofence.integrations.fastapi``,
``geofence.integrations.flask`` and ``geofence.integrations.django``.
See ``docs/middleware.md``.
"""

from geofence.integrations.asgi import GeofenceMiddleware
from geofence.integrations.common import (
    AuditLogger,
    ChallengeHook,
    FailMode,
    Gate,
    GeofenceConfig,
    GeofenceOptions,
    PrometheusMetrics,
    Reply,
    RequestInfo,
    RouterHook,
    SubjectHook,
    Verdict,
)
from geofence.integrations.wsgi import GeofenceWSGIMiddleware

__all__ = [
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
    "RouterHook",
    "SubjectHook",
    "Verdict",
]
