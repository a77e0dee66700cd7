"""A gate from a settings mapping (Django's ``settings.GEOFENCE``, Flask's ``app.config``).

Keys:

* the engine: ``policy`` (required: a preset name, a TOML path or a
  :class:`~geofence.policy.Policy`), ``snapshot`` (``None``: the bundled data),
  ``cache_size``; or instead ``engine``: a ready
  :class:`~geofence.engine.Geofence` or a dotted path to a zero-argument
  callable returning one. ``watch``: seconds between file-change checks for hot
  reload. ``route_policies``: path prefix -> policy reference on the same
  snapshot, or a ``Geofence``;
* every :class:`~geofence.integrations.config.GeofenceOptions` key; the hooks
  (``challenge``, ``subject``, ``router``) may be dotted paths;
* ``audit``: ``False`` to disable, a mapping of
  :class:`~geofence.integrations.audit.AuditLogger` arguments (its ``fields``
  hook may be a dotted path), or an instance; ``metrics`` and ``tracing``:
  ``True`` or an instance.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geofence.integrations.audit import AuditLogger
from geofence.integrations.config import GeofenceConfig
from geofence.integrations.gate import Gate

if TYPE_CHECKING:
    from geofence.engine import Geofence

__all__ = ["ENGINE_KEYS", "SettingsError", "build_gate", "build_settings"]

#: Keys that describe the engine rather than the integration.
ENGINE_KEYS = frozenset({"policy", "snapshot", "cache_size", "watch", "route_policies", "engine"})
_HOOKS = ("challenge", "subject", "router")


class SettingsError(ValueError):
    """The settings mapping is invalid; the message names the key."""


def _import(ref: str, what: str) -> Any:
    """Import a dotted path named in the settings."""
    try:
        return pkgutil.resolve_name(ref)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SettingsError(f"{what}: cannot import {ref!r} ({exc})") from exc


def build_gate(raw: object, *, integration: str, name: str = "GEOFENCE") -> Gate:
    """The gate a settings mapping describes (see :func:`build_settings`).

    Args:
        raw: The mapping (see the module docstring).
        integration: Name recorded in audit lines (``"django"``, ``"flask"``).
        name: What the mapping is called in messages (``settings.GEOFENCE``).

    Raises:
        SettingsError: A key is missing, unknown or invalid.
        GeofenceError: The policy or snapshot cannot be loaded.
    """
    engine, config = build_settings(raw, name=name)
    return Gate(engine, config, integration=integration)


def build_settings(raw: object, *, name: str = "GEOFENCE") -> tuple[Geofence, GeofenceConfig]:
    """Build the engine and the integration settings a settings mapping describes.

    Args:
        raw: The mapping (see the module docstring).
        name: What the mapping is called in messages (``settings.GEOFENCE``).

    Raises:
        SettingsError: A key is missing, unknown or invalid.
        GeofenceError: The policy or snapshot cannot be loaded (a
            :class:`~geofence.errors.PolicyError` names a mistyped preset).
    """
    from geofence.engine import Geofence
    from geofence.snapshot.reader import Snapshot

    if not isinstance(raw, Mapping):
        raise SettingsError(f"{name} must be a dict, got {raw!r}")
    options: dict[str, Any] = {k: v for k, v in raw.items() if k not in ENGINE_KEYS}
    for hook in _HOOKS:
        if isinstance(options.get(hook), str):
            options[hook] = _import(options[hook], f"{name}[{hook!r}]")
    audit = options.get("audit")
    if audit is False:
        options["audit"] = None
    elif isinstance(audit, Mapping):
        arguments = dict(audit)
        if isinstance(arguments.get("fields"), str):
            arguments["fields"] = _import(arguments["fields"], f"{name}['audit']['fields']")
        try:
            options["audit"] = AuditLogger(**arguments)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{name}['audit']: {exc}") from exc

    engine_ref = raw.get("engine")
    cache_size = raw.get("cache_size", 0)
    if engine_ref is not None:
        clash = sorted({"policy", "snapshot", "cache_size"} & set(raw))
        if clash:
            raise SettingsError(f"{name}: 'engine' excludes {clash}")
        engine = engine_ref
        if isinstance(engine_ref, str):
            engine = _import(engine_ref, f"{name}['engine']")()
        if not isinstance(engine, Geofence):
            raise SettingsError(f"{name}['engine'] gave {engine!r}, not a Geofence")
        snap = engine.snapshot
    else:
        if "policy" not in raw:
            # No silent allow-all: a compliance control must name its policy.
            raise SettingsError(
                f"{name} needs 'policy' (a preset name, a TOML path or a Policy) or 'engine'"
            )
        snapshot = raw.get("snapshot")
        snap = (
            snapshot
            if isinstance(snapshot, Snapshot)
            else (Snapshot.default() if snapshot is None else Snapshot.open(snapshot))
        )
        engine = Geofence(snap, raw["policy"], cache_size=cache_size)
    routes = raw.get("route_policies") or {}
    if not isinstance(routes, Mapping):
        raise SettingsError(f"{name}['route_policies'] must be a dict")
    options["route_policies"] = {
        prefix: ref if isinstance(ref, Geofence) else Geofence(snap, ref, cache_size=cache_size)
        for prefix, ref in routes.items()
    }
    try:
        config = GeofenceConfig.from_options(**options)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from exc
    watch = raw.get("watch")
    if watch:
        engine.watch(float(watch))
    return engine, config
