"""Account history: what a subject did before, and the signals it yields.

This module is pure and store-agnostic. A store (:mod:`geofence.signals.stores`)
appends each request's :class:`Observation` and answers with a
:class:`HistoryView`; :func:`history_signals` turns the current observation and
that view into :class:`~geofence.signals.base.Signal` values:

- ``impossible_travel``: the subject moved faster than an airliner between two
  requests.
- ``country_hopping``: the subject appeared in many countries within a window.
- ``denied_then_evasion``: the subject was denied for a jurisdiction and now
  arrives through an anonymiser or from somewhere else.
- ``shared_egress``: many subjects behind one egress address (informational by
  default: offices and carrier-grade NAT do this).
- ``history_unavailable``: the store failed and its failure mode is ``"closed"``.

See ``docs/history.md`` for the semantics of every signal and the defaults.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from geofence.kinds import ANONYMISING, NetworkKind, kinds_to_names
from geofence.signals.base import Signal

__all__ = [
    "FailureMode",
    "HistoryConfig",
    "HistoryView",
    "Locator",
    "Observation",
    "decode_observations",
    "history_signals",
]

FailureMode = Literal["open", "closed"]
"""What a store failure means: ``"open"`` adds no signal, ``"closed"`` adds
``history_unavailable`` with a high weight."""

Locator = Callable[[str], tuple[float, float] | None]
"""Maps an ISO 3166-1 alpha-2 country code to a representative ``(lat, lon)``."""

_FORMAT_VERSION = 1
_FIELDS = 11  # version + the ten fields of an Observation
_EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius
_HOUR = 3600.0
_DAY = 86400.0


# Accepted JSON value types per stored field (exact types: a JSON ``true`` is a
# bool, never a number).
_NUMBER = frozenset({int, float})
_OPTIONAL_NUMBER = frozenset({int, float, type(None)})
_OPTIONAL_STR = frozenset({str, type(None)})


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One request by one subject, as the history remembers it.

    Raises:
        ValueError: ``at`` or a coordinate is not finite, a coordinate is out of
            range, only one of latitude/longitude is given, or ``kinds`` is negative.
    """

    subject: str
    """Stable account or API-key identifier the history is kept for."""

    at: float
    """When the request arrived, in Unix seconds."""

    address: str
    """Egress address as text (the client address after trusted-proxy resolution)."""

    country: str | None = None
    """ISO 3166-1 alpha-2 code the address resolved to, or ``None`` if unknown."""

    subdivision: str | None = None
    """Full ISO 3166-2 code (``"UA-43"``) the address resolved to, or ``None``."""

    latitude: float | None = None
    """Approximate latitude in degrees, where the data has coordinates."""

    longitude: float | None = None
    """Approximate longitude in degrees, where the data has coordinates."""

    kinds: int = 0
    """:class:`~geofence.kinds.NetworkKind` value of the address (0 = unknown)."""

    denied: bool = False
    """Whether a jurisdiction rule denied this request (before history signals)."""

    jurisdiction_denied: str | None = None
    """The jurisdiction code (``"CU"``, ``"UA-43"``) whose rule denied the request."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.at):
            raise ValueError(f"observation time must be finite, got {self.at!r}")
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("latitude and longitude must be given together or not at all")
        if self.latitude is not None and self.longitude is not None:
            if not (math.isfinite(self.latitude) and -90.0 <= self.latitude <= 90.0):
                raise ValueError(f"latitude must be within [-90, 90], got {self.latitude!r}")
            if not (math.isfinite(self.longitude) and -180.0 <= self.longitude <= 180.0):
                raise ValueError(f"longitude must be within [-180, 180], got {self.longitude!r}")
        if self.kinds < 0:
            raise ValueError(f"kinds must be a NetworkKind value (>= 0), got {self.kinds!r}")

    def to_bytes(self) -> bytes:
        """Serialise to a compact, versioned JSON array (ASCII, about 60-120 bytes).

        Returns:
            ``[1, subject, at, address, country, subdivision, lat, lon, kinds,
            denied, jurisdiction_denied]`` as ASCII JSON bytes.
        """
        row = [
            _FORMAT_VERSION,
            self.subject,
            self.at,
            self.address,
            self.country,
            self.subdivision,
            self.latitude,
            self.longitude,
            int(self.kinds),
            1 if self.denied else 0,
            self.jurisdiction_denied,
        ]
        # ensure_ascii keeps lone surrogates in subject ids encodable and round-trippable.
        return json.dumps(row, separators=(",", ":"), allow_nan=False).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Observation:
        """Parse what :meth:`to_bytes` wrote.

        Args:
            data: The stored form, as bytes or text.

        Returns:
            The observation.

        Raises:
            ValueError: ``data`` is not a well-formed observation of a known format
                version (use :func:`decode_observations` to skip such entries).
        """
        try:
            row = json.loads(data)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise ValueError(f"stored observation is not JSON: {exc}") from None
        return _from_row(row)


def _from_row(row: object) -> Observation:
    """Validate one decoded JSON value and build the observation it stores."""
    if not isinstance(row, list) or len(row) != _FIELDS or row[0] != _FORMAT_VERSION:
        raise ValueError("stored observation is not a version-1 observation array")
    _, subject, at, address, country, subdivision, lat, lon, kinds, denied, jur = row
    # Exact type checks (bool is not a number here) in one test: this runs for up
    # to max_observations_per_subject entries on every Redis-backed request.
    if (
        type(subject) is not str
        or type(address) is not str
        or type(at) not in _NUMBER
        or type(country) not in _OPTIONAL_STR
        or type(subdivision) not in _OPTIONAL_STR
        or type(jur) not in _OPTIONAL_STR
        or type(lat) not in _OPTIONAL_NUMBER
        or type(lon) not in _OPTIONAL_NUMBER
        or type(kinds) is not int
        or type(denied) is not int
        or denied not in (0, 1)
    ):
        raise ValueError("stored observation has a field of the wrong type")
    try:
        return Observation(
            subject=subject,
            at=float(at),
            address=address,
            country=country,
            subdivision=subdivision,
            latitude=None if lat is None else float(lat),
            longitude=None if lon is None else float(lon),
            kinds=kinds,
            denied=bool(denied),
            jurisdiction_denied=jur,
        )
    except (ValueError, OverflowError) as exc:  # OverflowError: float(10**400)
        raise ValueError(f"stored observation is invalid: {exc}") from None


def decode_observations(items: Iterable[bytes | str]) -> tuple[Observation, ...]:
    """Parse stored observations, silently skipping malformed entries.

    Stored history is evidence, not configuration: one corrupt or foreign entry
    (another version of this library, a manual edit) must not break requests.

    Args:
        items: Stored forms as written by :meth:`Observation.to_bytes`.

    Returns:
        The well-formed observations, in the given order.
    """
    originals = list(items)
    entries = [
        item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
        for item in originals
    ]
    # Fast path for the Redis reply (up to 50 entries per request): one JSON parse
    # of the whole list. Any malformed entry sends us to the per-entry path.
    try:
        rows = json.loads(b"[" + b",".join(entries) + b"]")
    except (ValueError, RecursionError):
        rows = None
    if not isinstance(rows, list) or len(rows) != len(entries):
        rows = []
        for original in originals:
            try:
                rows.append(json.loads(original))
            except (ValueError, RecursionError):
                continue
    result = []
    for row in rows:
        try:
            result.append(_from_row(row))
        except ValueError:
            continue
    return tuple(result)


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryConfig:
    """Thresholds, windows, bounds and weights of the history signals.

    Raises:
        ValueError: A window, bound or threshold is not positive, or a weight is
            not finite.
    """

    max_speed_kmh: float = 1000.0
    """``impossible_travel`` fires above this ground speed (an airliner cruises at ~900)."""

    min_travel_km: float = 500.0
    """``impossible_travel`` ignores moves shorter than this: geolocation error and
    country centroids of neighbours are closer than that."""

    hop_window_s: float = 24 * _HOUR
    """Window in which ``country_hopping`` counts distinct countries."""

    hop_threshold: int = 3
    """``country_hopping`` fires at this many distinct countries (current included)."""

    denied_lookback_s: float = 30 * _DAY
    """How long a jurisdiction denial is remembered by ``denied_then_evasion``."""

    egress_window_s: float = _HOUR
    """Window in which subjects behind one egress address are counted."""

    egress_subject_threshold: int = 20
    """``shared_egress`` fires at this many distinct subjects (current included)."""

    max_observations_per_subject: int = 50
    """How many observations a store keeps per subject (newest win)."""

    max_subjects_per_egress: int = 1000
    """How many subjects a store keeps per egress address (most recent win); the
    count in :attr:`HistoryView.egress_subjects` saturates here."""

    ttl_s: float = 30 * _DAY
    """A subject's history expires this long after its last observation."""

    impossible_travel_weight: float = 3.0
    """Weight of ``impossible_travel``."""

    country_hopping_weight: float = 2.0
    """Weight of ``country_hopping``."""

    denied_then_evasion_weight: float = 5.0
    """Weight of ``denied_then_evasion``."""

    shared_egress_weight: float = 0.0
    """Weight of ``shared_egress`` (0 = informational)."""

    history_unavailable_weight: float = 5.0
    """Weight of ``history_unavailable`` (emitted only in fail-closed mode)."""

    def __post_init__(self) -> None:
        positive = {
            "max_speed_kmh": self.max_speed_kmh,
            "hop_window_s": self.hop_window_s,
            "denied_lookback_s": self.denied_lookback_s,
            "egress_window_s": self.egress_window_s,
            "ttl_s": self.ttl_s,
            "hop_threshold": self.hop_threshold,
            "egress_subject_threshold": self.egress_subject_threshold,
            "max_observations_per_subject": self.max_observations_per_subject,
            "max_subjects_per_egress": self.max_subjects_per_egress,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"HistoryConfig.{name} must be positive, got {value!r}")
        if not (math.isfinite(self.min_travel_km) and self.min_travel_km >= 0):
            raise ValueError(f"HistoryConfig.min_travel_km must be >= 0, got {self.min_travel_km}")
        weights = {
            "impossible_travel_weight": self.impossible_travel_weight,
            "country_hopping_weight": self.country_hopping_weight,
            "denied_then_evasion_weight": self.denied_then_evasion_weight,
            "shared_egress_weight": self.shared_egress_weight,
            "history_unavailable_weight": self.history_unavailable_weight,
        }
        for name, value in weights.items():
            if not math.isfinite(value):
                raise ValueError(f"HistoryConfig.{name} must be finite, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryView:
    """What a store knows about a subject right after recording an observation."""

    observations: tuple[Observation, ...] = field(default=())
    """The subject's earlier observations, newest first, EXCLUDING the one just
    recorded; at most ``max_observations_per_subject``."""

    egress_subjects: int = 0
    """Distinct subjects seen behind the egress address within ``egress_window_s``,
    INCLUDING the current subject (so at least 1 after a successful record)."""

    degraded: bool = False
    """The store could not answer; the other fields are empty."""

    error: str = ""
    """Why the store could not answer (empty unless :attr:`degraded`)."""

    failure_mode: FailureMode = "open"
    """The store's failure mode, which tells :func:`history_signals` what a
    degraded view means."""

    @classmethod
    def unavailable(cls, error: str, failure_mode: FailureMode = "open") -> HistoryView:
        """A degraded view: the store failed with ``error``."""
        return cls(degraded=True, error=error, failure_mode=failure_mode)


def _distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine) between two ``(lat, lon)`` points."""
    lat1, lon1 = math.radians(a[0]), math.radians(a[1])
    lat2, lon2 = math.radians(b[0]), math.radians(b[1])
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def _span(seconds: float) -> str:
    """Human-readable duration for signal details."""
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * _HOUR:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * _DAY:
        return f"{seconds / _HOUR:.1f} h"
    return f"{seconds / _DAY:.1f} d"


def _position(obs: Observation, locate: Locator | None) -> tuple[float, float] | None:
    if obs.latitude is not None and obs.longitude is not None:
        return (obs.latitude, obs.longitude)
    if locate is not None and obs.country is not None:
        return locate(obs.country)
    return None


def _place(obs: Observation) -> str:
    return obs.subdivision or obs.country or obs.address


def _impossible_travel(
    current: Observation,
    earlier: tuple[Observation, ...],
    config: HistoryConfig,
    locate: Locator | None,
) -> Signal | None:
    if current.kinds & NetworkKind.RELAY:
        return None
    here = _position(current, locate)
    if here is None:
        return None
    for prev in earlier:
        # Relays map to a coarse, operator-published region: not a real position.
        if prev.kinds & NetworkKind.RELAY:
            continue
        there = _position(prev, locate)
        if there is None:
            continue
        # Only the most recent positioned observation is compared.
        if current.country is not None and current.country == prev.country:
            return None
        distance = _distance_km(there, here)
        if distance < config.min_travel_km:
            return None
        elapsed = abs(current.at - prev.at)
        # A one-second floor keeps simultaneous requests finite (and still impossible).
        speed = distance / (max(elapsed, 1.0) / _HOUR)
        if speed <= config.max_speed_kmh:
            return None
        return Signal(
            code="impossible_travel",
            weight=config.impossible_travel_weight,
            detail=(
                f"{distance:.0f} km from {_place(prev)} to {_place(current)} in "
                f"{_span(elapsed)} ({speed:.0f} km/h > {config.max_speed_kmh:.0f} km/h)"
            ),
        )
    return None


def _country_hopping(
    current: Observation, earlier: tuple[Observation, ...], config: HistoryConfig
) -> Signal | None:
    countries = {current.country} if current.country is not None else set()
    for prev in earlier:
        if prev.country is not None and abs(current.at - prev.at) <= config.hop_window_s:
            countries.add(prev.country)
    if len(countries) < config.hop_threshold:
        return None
    return Signal(
        code="country_hopping",
        weight=config.country_hopping_weight,
        detail=(
            f"{len(countries)} countries within {_span(config.hop_window_s)}: "
            f"{', '.join(sorted(countries))}"
        ),
    )


def _moved_away(current: Observation, denied: Observation) -> bool:
    """Whether ``current`` comes from somewhere other than the denied place."""
    if current.country is None:
        return False
    if current.country != denied.country:
        return True
    # A subdivision-level denial (ISO 3166-2 code, "UA-43") is evaded from another
    # subdivision of the same country.
    jurisdiction = denied.jurisdiction_denied or ""
    return (
        "-" in jurisdiction
        and current.subdivision is not None
        and current.subdivision != jurisdiction
    )


def _denied_then_evasion(
    current: Observation, earlier: tuple[Observation, ...], config: HistoryConfig
) -> Signal | None:
    if current.denied:
        return None  # still denied: nothing is being evaded
    for prev in earlier:
        if not prev.denied or abs(current.at - prev.at) > config.denied_lookback_s:
            continue
        how = []
        anonymiser = current.kinds & ANONYMISING
        if anonymiser:
            how.append("through " + "+".join(kinds_to_names(anonymiser)))
        if _moved_away(current, prev):
            how.append(f"from {_place(current)}")
        if not how:
            return None
        jurisdiction = prev.jurisdiction_denied or prev.country or "a jurisdiction"
        return Signal(
            code="denied_then_evasion",
            weight=config.denied_then_evasion_weight,
            detail=(
                f"denied for {jurisdiction} {_span(current.at - prev.at)} ago; "
                f"now arriving {' and '.join(how)}"
            ),
        )
    return None


def history_signals(
    current: Observation,
    view: HistoryView,
    config: HistoryConfig | None = None,
    *,
    locate: Locator | None = None,
) -> tuple[Signal, ...]:
    """Compute the history signals for one request.

    Pure and deterministic: the same inputs give the same signals, in the order
    ``impossible_travel``, ``country_hopping``, ``denied_then_evasion``,
    ``shared_egress`` (or only ``history_unavailable``).

    Args:
        current: The observation of this request (``denied`` is the jurisdiction
            verdict before signals).
        view: What the store returned after recording ``current``; its
            ``observations`` exclude ``current``.
        config: Thresholds and weights; the defaults when ``None``.
        locate: Optional country-centroid lookup used by ``impossible_travel`` for
            observations that have a country but no coordinates.

    Returns:
        The signals that fired, possibly none. A degraded view yields
        ``history_unavailable`` when its failure mode is ``"closed"``, else nothing.
    """
    cfg = config if config is not None else _DEFAULT_CONFIG
    if view.degraded:
        if view.failure_mode == "closed":
            return (
                Signal(
                    code="history_unavailable",
                    weight=cfg.history_unavailable_weight,
                    detail=f"account history unavailable (failing closed): {view.error}",
                ),
            )
        return ()
    earlier = view.observations
    found = (
        _impossible_travel(current, earlier, cfg, locate),
        _country_hopping(current, earlier, cfg),
        _denied_then_evasion(current, earlier, cfg),
    )
    signals = [s for s in found if s is not None]
    if view.egress_subjects >= cfg.egress_subject_threshold:
        signals.append(
            Signal(
                code="shared_egress",
                weight=cfg.shared_egress_weight,
                detail=(
                    f"{view.egress_subjects} subjects behind {current.address} within "
                    f"{_span(cfg.egress_window_s)}"
                ),
            )
        )
    return tuple(signals)


_DEFAULT_CONFIG = HistoryConfig()
