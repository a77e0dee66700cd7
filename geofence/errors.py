"""The error tree of geofence.

A small, honest hierarchy: every error raised on purpose by this package is a
:class:`GeofenceError`. Errors caused by a caller's value also subclass
:class:`ValueError`, so code that already catches ``ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "AddressNotFoundError",
    "ContextError",
    "DataAgeWarning",
    "GeofenceError",
    "InvalidAddressError",
    "PolicyError",
    "SnapshotError",
    "SourceError",
    "StoreError",
    "TrustWarning",
]


class GeofenceError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidAddressError(GeofenceError, ValueError):
    """A value is not an IP address this package accepts.

    The message names the offending value (shortened when long) and the rule
    it breaks, e.g. "IPv4 octet with a leading zero is ambiguous (octal)".
    """


class PolicyError(GeofenceError, ValueError):
    """A policy is invalid: bad TOML, unknown codes, bad dates or CIDRs, contradictions.

    Attributes:
        source: The file or preset the policy came from, when known.
        rule_id: The id of the offending rule, when the error is about one rule.
    """

    def __init__(self, message: str, *, source: str | None = None, rule_id: str | None = None):
        parts = []
        if source:
            parts.append(source)
        if rule_id:
            parts.append(f"rule {rule_id!r}")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.source = source
        self.rule_id = rule_id


class ContextError(GeofenceError, ValueError):
    """A request context holds an unusable value: a NaN time, a negative signal weight...

    Raised when the :class:`~geofence.context.Context` or
    :class:`~geofence.signals.base.Signal` is built, so a bad number never reaches
    a risk score, a rule or an audit line.
    """


class AddressNotFoundError(GeofenceError, LookupError):
    """No data covers an address (:meth:`geofence.Snapshot.find`).

    The name and attributes follow ``geoip2.errors.AddressNotFoundError``, so
    code written for ``geoip2`` keeps its ``except`` clauses. Decisions never
    raise it: an address without data gets a ``Decision`` (outcome ``unknown``).

    Attributes:
        ip_address: The address looked up, as text.
        network: The largest network around it that has no data.
    """

    def __init__(
        self, message: str, *, ip_address: str | None = None, network: object = None
    ) -> None:
        super().__init__(message)
        self.ip_address = ip_address
        self.network = network


class SnapshotError(GeofenceError):
    """A snapshot file is missing, corrupt, truncated, too new or otherwise unusable.

    The message says what is wrong and what to do (rebuild, upgrade, re-download).
    """


class SourceError(GeofenceError):
    """A raw data source (MMDB, CSV, feed, ...) cannot be read at build time."""


class StoreError(GeofenceError):
    """A history store (in-process or Redis) failed to answer."""


class DataAgeWarning(UserWarning):
    """The loaded snapshot's data is older than the configured maximum age."""


class TrustWarning(UserWarning):
    """A proxy-trust configuration believes headers from peers it cannot verify."""
