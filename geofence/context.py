"""Request context: who the subject is and what the client says about itself.

Context is optional. Without it, a decision depends on the address only and is
precomputed; with it, rules about subjects and workaround signals are evaluated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from geofence.errors import ContextError
from geofence.signals.base import Signal

__all__ = ["Context", "Subject"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """The authenticated party behind a request, as the application knows it."""

    id: str | None = None
    """Stable subject (account) id; needed for account-history signals."""

    nationalities: frozenset[str] = frozenset()
    """Verified nationalities/citizenships (ISO 3166-1 alpha-2); empty = not known."""

    account_country: str | None = None
    """Country declared on the account or billing profile."""

    org_id: str | None = None
    """Organisation id, for organisation allow-lists."""

    verified: bool | None = None
    """Whether the subject passed identity verification (``None`` = not known)."""

    @classmethod
    def from_mapping(cls, data: dict[str, object]) -> Subject:
        """Build from JSON-like data (``nationality`` or ``nationalities`` accepted).

        Raises:
            ValueError: A field has the wrong type.
        """
        known = {"id", "nationality", "nationalities", "account_country", "org_id", "verified"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown subject fields {sorted(unknown)}; known: {sorted(known)}")
        nats = data.get("nationalities", data.get("nationality", ()))
        if isinstance(nats, str):
            nats = [nats]
        if not isinstance(nats, (list, tuple, set, frozenset)) or not all(
            isinstance(n, str) for n in nats
        ):
            raise ValueError(f"nationalities must be a list of country codes, got {nats!r}")
        verified = data.get("verified")
        if verified is not None and not isinstance(verified, bool):
            raise ValueError(f"verified must be true or false, got {verified!r}")
        for key in ("id", "account_country", "org_id"):
            if data.get(key) is not None and not isinstance(data.get(key), str):
                raise ValueError(f"{key} must be a string, got {data.get(key)!r}")
        acct = data.get("account_country")
        return cls(
            id=data.get("id"),  # type: ignore[arg-type]  # checked above
            nationalities=frozenset(n.upper() for n in nats),
            account_country=acct.upper() if isinstance(acct, str) else None,
            org_id=data.get("org_id"),  # type: ignore[arg-type]  # checked above
            verified=verified,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """Everything about a request beyond its address."""

    subject: Subject | None = None
    """The authenticated subject, if any."""

    timezone: str | None = None
    """IANA time zone reported by the client (``Intl.DateTimeFormat().resolvedOptions()``)."""

    accept_language: str | None = None
    """The request's ``Accept-Language`` header."""

    declared_location: tuple[float, float] | None = None
    """A location the client declared (latitude, longitude), e.g. from device GPS."""

    signals: tuple[Signal, ...] = field(default=())
    """Signals computed by the caller (e.g. spoofed forwarding headers)."""

    at: float | None = None
    """Unix time of the request (default: now); used by history signals."""

    def __post_init__(self) -> None:
        """Check the numbers and the signals once, where the context is made.

        Raises:
            ContextError: ``at`` is not a finite number of seconds,
                ``declared_location`` is not a (latitude, longitude) pair of
                finite degrees in range, or ``signals`` holds something other
                than :class:`~geofence.signals.base.Signal` objects.
        """
        if self.at is not None and not _finite(self.at):
            raise ContextError(f"Context.at must be a finite Unix time, got {self.at!r}")
        loc = self.declared_location
        if loc is not None and not (
            isinstance(loc, tuple)
            and len(loc) == 2
            and _finite(loc[0])
            and _finite(loc[1])
            and -90 <= loc[0] <= 90
            and -180 <= loc[1] <= 180
        ):
            raise ContextError(
                f"Context.declared_location must be (latitude, longitude) in degrees, got {loc!r}"
            )
        if not isinstance(self.signals, tuple) or not all(
            isinstance(s, Signal) for s in self.signals
        ):
            raise ContextError(
                f"Context.signals must be a tuple of Signal objects, got {self.signals!r:.100}"
            )


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
