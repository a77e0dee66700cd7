"""The signal pipeline: every workaround signal for one request with context.

A :class:`SignalPipeline` is passed to :class:`geofence.Geofence` as its
``signals``. For each request that has a context it gathers:

* **network** signals from the snapshot record (VPN, Tor, proxies, hosting,
  location-preserving relay) and from tunnelled addresses;
* **client-hint** signals (:mod:`geofence.signals.hints`): time zone,
  ``Accept-Language``, declared account country and declared location versus
  the address's country;
* **account-history** signals (:mod:`geofence.signals.history`) through a
  history store (in-process by default, Redis for a fleet) when the subject has
  an id;
* whatever the caller already put in ``Context.signals`` (e.g. the spoofing
  signals of :func:`geofence.signals.proxy.resolve_client`).

Weights here are defaults; a policy's ``[signal_weights]`` overrides them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from geofence.addr import ParsedAddress
from geofence.context import Context
from geofence.decision import Action, Decision
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.signals.base import Signal
from geofence.signals.hints import (
    country_centroid,
    declared_country_signal,
    distance_signal,
    language_signal,
    tz_signal,
)
from geofence.signals.history import HistoryConfig, HistoryView, Observation, history_signals
from geofence.signals.stores import AsyncHistoryStore, HistoryStore, MemoryHistoryStore

__all__ = ["NETWORK_WEIGHTS", "SignalConfig", "SignalPipeline"]

#: Default weights of network signals. A location-preserving relay is not evasion
#: (Apple documents that its egress keeps the user's coarse location), so its
#: weight is 0 unless ``relay_trusted`` is turned off.
NETWORK_WEIGHTS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "network_vpn": 2.0,
        "network_tor": 3.0,
        "network_public_proxy": 2.0,
        "network_residential_proxy": 2.0,
        "network_hosting": 0.5,
        "network_relay": 0.0,
        "tunnelled_address": 0.2,
    }
)

_NETWORK: Final = (
    (NetworkKind.VPN, "network_vpn", "the address is a VPN exit"),
    (NetworkKind.TOR, "network_tor", "the address is a Tor exit node"),
    (NetworkKind.PUBLIC_PROXY, "network_public_proxy", "the address is a public proxy"),
    (
        NetworkKind.RESIDENTIAL_PROXY,
        "network_residential_proxy",
        "the address is in a residential proxy network",
    ),
    (NetworkKind.HOSTING, "network_hosting", "the address belongs to a hosting provider"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalConfig:
    """Thresholds and switches of the pipeline."""

    relay_trusted: bool = True
    """Trust the country a location-preserving relay (iCloud Private Relay) reports.
    When false, relay addresses carry ``network_relay`` with weight ``relay_weight``."""

    relay_weight: float = 2.0
    """Weight of ``network_relay`` when relays are not trusted."""

    network_weights: Mapping[str, float] = field(default_factory=lambda: dict(NETWORK_WEIGHTS))
    """Weights of the network signals (codes as in :data:`NETWORK_WEIGHTS`)."""

    distance_threshold_km: float = 500.0
    """Distance between IP location and a declared location that raises ``location_distance``."""

    history: HistoryConfig = field(default_factory=HistoryConfig)
    """Account-history thresholds and weights."""


class SignalPipeline:
    """Computes signals for requests with context (see the module docs).

    Args:
        config: Thresholds and switches.
        store: A synchronous history store; default an in-process
            :class:`~geofence.signals.stores.MemoryHistoryStore`. ``None`` with
            ``history=False`` turns account history off.
        async_store: An asyncio store (``AsyncRedisHistoryStore``) used by
            :meth:`geofence.Geofence.adecide`; without one, ``adecide`` uses ``store``.
        history: Record and evaluate account history at all.
    """

    def __init__(
        self,
        config: SignalConfig | None = None,
        *,
        store: HistoryStore | None = None,
        async_store: AsyncHistoryStore | None = None,
        history: bool = True,
    ) -> None:
        self.config = config or SignalConfig()
        self.store: HistoryStore | None = (
            (store if store is not None else MemoryHistoryStore(self.config.history))
            if history
            else None
        )
        self.async_store = async_store if history else None

    # -- the parts ------------------------------------------------------------------------

    def network_signals(self, addr: ParsedAddress, record: NetworkRecord | None) -> list[Signal]:
        """Signals from the network kind of the address and from tunnelling."""
        out: list[Signal] = []
        weights = self.config.network_weights
        kinds = record.kinds if record is not None else NetworkKind.UNKNOWN
        who = f" ({record.provider})" if record is not None and record.provider else ""
        for flag, code, text in _NETWORK:
            if kinds & flag:
                out.append(Signal(code=code, weight=weights.get(code, 1.0), detail=text + who))
        if kinds & NetworkKind.RELAY:
            trusted = self.config.relay_trusted
            out.append(
                Signal(
                    code="network_relay",
                    weight=weights.get("network_relay", 0.0)
                    if trusted
                    else self.config.relay_weight,
                    detail="a location-preserving relay"
                    + who
                    + (
                        "; its reported location is trusted"
                        if trusted
                        else "; location not trusted"
                    ),
                )
            )
        if addr.tunnel is not None:
            out.append(
                Signal(
                    code="tunnelled_address",
                    weight=weights.get("tunnelled_address", 0.2),
                    detail=f"IPv4 address carried in IPv6 ({addr.tunnel.value})",
                )
            )
        return out

    def hint_signals(self, record: NetworkRecord | None, context: Context) -> list[Signal]:
        """Client-hint signals: time zone, language, declared country and location."""
        country = record.country if record is not None else None
        out: list[Signal | None] = [
            tz_signal(context.timezone, country),
            language_signal(context.accept_language, country),
        ]
        subject = context.subject
        if subject is not None:
            out.append(declared_country_signal(subject.account_country, country))
        if context.declared_location is not None:
            here: tuple[float, float] | str | None = country
            if record is not None and record.latitude is not None and record.longitude is not None:
                here = (record.latitude, record.longitude)
            out.append(
                distance_signal(here, context.declared_location, self.config.distance_threshold_km)
            )
        return [s for s in out if s is not None]

    def observation(
        self, addr: ParsedAddress, record: NetworkRecord | None, context: Context, ip: Decision
    ) -> Observation | None:
        """The history observation of this request, or ``None`` without a subject id."""
        subject = context.subject
        if subject is None or not subject.id:
            return None
        # Only denials by a jurisdiction rule count; the engine names the jurisdiction with a
        # "jurisdiction:<code>" reason on the IP-only decision it hands us.
        jurisdiction = next(
            (r.removeprefix("jurisdiction:") for r in ip.reasons if r.startswith("jurisdiction:")),
            None,
        )
        denied = ip.action is Action.DENY and ip.outcome == "rule" and jurisdiction is not None
        lat = record.latitude if record is not None else None
        lon = record.longitude if record is not None else None
        return Observation(
            subject=subject.id,
            at=context.at if context.at is not None else time.time(),
            address=addr.text,  # the effective address: ::ffff:a.b.c.d and a.b.c.d are one egress
            country=record.country if record is not None else None,
            subdivision=record.subdivision if record is not None else None,
            latitude=lat if lon is not None else None,
            longitude=lon if lat is not None else None,
            kinds=int(record.kinds) if record is not None else 0,
            denied=denied,
            jurisdiction_denied=jurisdiction if denied else None,
        )

    def _history(self, obs: Observation, view: HistoryView) -> tuple[list[Signal], bool]:
        sigs = history_signals(obs, view, self.config.history, locate=country_centroid)
        return list(sigs), view.degraded

    # -- the provider protocol used by the engine ------------------------------------------

    def __call__(
        self, addr: ParsedAddress, record: NetworkRecord | None, context: Context, ip: Decision
    ) -> tuple[list[Signal], bool]:
        """All signals for a request; returns ``(signals, degraded)``."""
        signals = self.network_signals(addr, record) + self.hint_signals(record, context)
        degraded = False
        obs = self.observation(addr, record, context, ip)
        if obs is not None and self.store is not None:
            hist, degraded = self._history(obs, self.store.record(obs))
            signals += hist
        return signals, degraded

    async def acollect(
        self, addr: ParsedAddress, record: NetworkRecord | None, context: Context, ip: Decision
    ) -> tuple[list[Signal], bool]:
        """Async variant of :meth:`__call__` (uses ``async_store`` when set)."""
        if self.async_store is None:
            return self(addr, record, context, ip)
        signals = self.network_signals(addr, record) + self.hint_signals(record, context)
        degraded = False
        obs = self.observation(addr, record, context, ip)
        if obs is not None:
            hist, degraded = self._history(obs, await self.async_store.record(obs))
            signals += hist
        return signals, degraded
