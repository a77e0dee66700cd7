"""Result records: what the snapshot knows about a network.

Records are frozen, slotted and keyword-only. Many ranges share one record: the
snapshot stores each distinct record once (interning) and ranges refer to it by id.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from geofence.addr import ParsedAddress
from geofence.kinds import NetworkKind

__all__ = ["LookupResult", "NetworkRecord", "range_to_networks"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkRecord:
    """Everything the merged data says about one range of addresses.

    ``None`` in a field means "no source said"; it never means a negative answer.
    """

    country: str | None = None
    """ISO 3166-1 alpha-2 code of where the network is located (``"UA"``)."""

    subdivision: str | None = None
    """Full ISO 3166-2 code of the first-level subdivision (``"UA-43"``)."""

    registered_country: str | None = None
    """ISO 3166-1 alpha-2 code of the country where the network is registered."""

    city: str | None = None
    """City name as the source gave it (English where the source offers a choice)."""

    asn: int | None = None
    """Autonomous system number announcing the network."""

    as_org: str | None = None
    """Organisation name of the autonomous system."""

    provider: str | None = None
    """Operator named by a network-kind source (``"Amazon AWS"``, ``"Apple Private Relay"``)."""

    kinds: NetworkKind = NetworkKind.UNKNOWN
    """Network kinds; ``UNKNOWN`` (no flags) means no source said anything."""

    latitude: float | None = None
    """Approximate latitude in degrees, where a source has coordinates."""

    longitude: float | None = None
    """Approximate longitude in degrees, where a source has coordinates."""

    accuracy_km: int | None = None
    """Radius of the source's stated accuracy in kilometres, where given."""

    sources: tuple[str, ...] = field(default=())
    """Names of the sources that spoke for this range, in priority order."""

    territory: str | None = None
    """Why the location was set by the territory table: the source's own answer and the
    code it maps to (``"dbip-city-lite: RU / Crimea -> UA-43"``); see ``data/territories.toml``."""

    alt_country: str | None = None
    """ISO 3166-1 code that an independent country source gives instead of ``country``,
    where the two disagree about a country a bundled preset restricts."""

    dispute: str | None = None
    """Both answers of such a disagreement, in words
    (``"dbip-country-lite says CN, iptoasn-country says KP"``)."""

    def with_sources(self, sources: tuple[str, ...]) -> NetworkRecord:
        """Return a copy naming ``sources`` as the provenance."""
        return replace(self, sources=sources)

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-ready mapping; kinds as a list of lower-case names."""
        from geofence.kinds import kinds_to_names

        return {
            "country": self.country,
            "subdivision": self.subdivision,
            "registered_country": self.registered_country,
            "city": self.city,
            "asn": self.asn,
            "as_org": self.as_org,
            "provider": self.provider,
            "kinds": kinds_to_names(self.kinds),
            "latitude": self.latitude,
            "longitude": self.longitude,
            "accuracy_km": self.accuracy_km,
            "sources": list(self.sources),
            "territory": self.territory,
            "alt_country": self.alt_country,
            "dispute": self.dispute,
        }


def range_to_networks(
    version: int, first: int, last: int
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The minimal list of CIDR networks covering ``first..last`` exactly."""
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return list(ipaddress.summarize_address_range(cls(first), cls(last)))


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupResult:
    """The answer of :meth:`geofence.Snapshot.lookup` for one address."""

    address: ParsedAddress
    """The parsed (and unwrapped) address that was looked up."""

    record: NetworkRecord | None
    """What the data says, or ``None`` when the address is in no range ("unknown")."""

    record_id: int
    """Interned record id (``-1`` when ``record`` is ``None``)."""

    first: int
    """First address of the snapshot range (or gap) that contains the address."""

    last: int
    """Last address of that range (or gap)."""

    @property
    def found(self) -> bool:
        """Whether the data covers the address."""
        return self.record is not None

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The largest CIDR network that contains the address and lies inside the range."""
        for net in range_to_networks(self.address.version, self.first, self.last):
            if int(net.network_address) <= self.address.value <= int(net.broadcast_address):
                return net
        raise AssertionError("unreachable: the range contains the address")  # pragma: no cover
