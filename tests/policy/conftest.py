"""Fixtures shared by the policy tests: a small hand-made world and engine factories.

The world is a snapshot built with :func:`~geofence.snapshot.build.build_snapshot` from two
hand-made sources: a location source (countries, Ukrainian subdivisions, one Ukrainian
range without a subdivision, ASNs) and a network-kind source (VPN, Tor, relay, proxy,
hosting). Each named network has one address in :data:`ADDR`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import textwrap
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest

from geofence.engine import Geofence
from geofence.kinds import NetworkKind
from geofence.policy import Policy, parse_policy
from geofence.records import NetworkRecord
from geofence.snapshot.build import build_snapshot
from geofence.snapshot.reader import Snapshot
from geofence.sources.base import RangeEntry
from tests.strategies import make_source

BUILT_AT: Final = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

#: A date far from every boundary used in the tests' policies (and after the presets' dates).
TODAY: Final = dt.date(2026, 11, 27)

K = NetworkKind

#: name -> (network, location record). Kinds come from the second source (``KINDS``).
LOCATIONS: Final[dict[str, tuple[str, NetworkRecord]]] = {
    "us": ("1.0.0.0/24", NetworkRecord(country="US", subdivision="US-CA", asn=64500)),
    "us_vpn": ("1.0.1.0/24", NetworkRecord(country="US", asn=64501)),
    "gb": ("1.0.2.0/24", NetworkRecord(country="GB", asn=64502)),
    "ir": ("1.0.3.0/24", NetworkRecord(country="IR", asn=64503)),
    "cu": ("1.0.4.0/24", NetworkRecord(country="CU", asn=64504)),
    "kp": ("1.0.5.0/24", NetworkRecord(country="KP", asn=64505)),
    "sy": ("1.0.6.0/24", NetworkRecord(country="SY", asn=64506)),
    "ua_crimea": ("1.0.7.0/24", NetworkRecord(country="UA", subdivision="UA-43", asn=64507)),
    "ua_sevastopol": ("1.0.8.0/24", NetworkRecord(country="UA", subdivision="UA-40")),
    "ua_donetsk": ("1.0.9.0/24", NetworkRecord(country="UA", subdivision="UA-14")),
    "ua_luhansk": ("1.0.10.0/24", NetworkRecord(country="UA", subdivision="UA-09")),
    "ua_nosub": ("1.0.11.0/24", NetworkRecord(country="UA", asn=64511)),
    "ua_kyiv": ("1.0.12.0/24", NetworkRecord(country="UA", subdivision="UA-30")),
    "ua_zaporizhzhia": ("1.0.13.0/24", NetworkRecord(country="UA", subdivision="UA-23")),
    "ua_kherson": ("1.0.14.0/24", NetworkRecord(country="UA", subdivision="UA-65")),
    "de_tor": ("1.0.15.0/24", NetworkRecord(country="DE", asn=64515)),
    "de_relay": ("1.0.16.0/24", NetworkRecord(country="DE", asn=64516)),
    "de_hosting": ("1.0.17.0/24", NetworkRecord(country="DE", asn=16509)),
    "ru": ("1.0.18.0/24", NetworkRecord(country="RU", asn=64518)),
    "by": ("1.0.19.0/24", NetworkRecord(country="BY", asn=64519)),
    "gb_proxy": ("1.0.20.0/24", NetworkRecord(country="GB", asn=64520)),
    "ru_vpn": ("1.0.21.0/24", NetworkRecord(country="RU", asn=64521)),
    "pr": ("1.0.22.0/24", NetworkRecord(country="PR", asn=64522)),
    "ir6": ("2a01:1::/32", NetworkRecord(country="IR", asn=64503)),
    "us6": ("2a01:2::/32", NetworkRecord(country="US", asn=64500)),
    "ua_crimea6": ("2a01:3::/32", NetworkRecord(country="UA", subdivision="UA-43")),
}

#: name -> (network, kinds) of the network-kind source; "nocountry_vpn" has no location.
KINDS: Final[dict[str, tuple[str, NetworkKind]]] = {
    "us_vpn": ("1.0.1.0/24", K.VPN),
    "de_tor": ("1.0.15.0/24", K.TOR),
    "de_relay": ("1.0.16.0/24", K.RELAY),
    "de_hosting": ("1.0.17.0/24", K.HOSTING),
    "gb_proxy": ("1.0.20.0/24", K.PUBLIC_PROXY),
    "ru_vpn": ("1.0.21.0/24", K.VPN | K.HOSTING),
    "nocountry_vpn": ("1.0.30.0/24", K.VPN),
}


def _host(network: str) -> str:
    """The first host address of a network (network address + 1)."""
    net = ipaddress.ip_network(network)
    return str(net.network_address + 1)


#: One address per named network.
ADDR: Final[dict[str, str]] = {
    name: _host(net) for name, (net, _) in (*LOCATIONS.items(), *KINDS.items())
}

#: An address no source covers.
UNKNOWN: Final = "1.0.200.1"
#: An IPv6 address no source covers.
UNKNOWN6: Final = "2a02::1"
#: Special-purpose addresses and their category.
RESERVED: Final[dict[str, str]] = {
    "10.1.2.3": "private",
    "127.0.0.1": "loopback",
    "::1": "loopback",
    "fe80::1": "link_local",
    "192.0.2.1": "documentation",
}


def mapped(ipv4: str) -> str:
    """The IPv4-mapped IPv6 form (RFC 4291) of an IPv4 address."""
    return str(ipaddress.IPv6Address((0xFFFF << 32) | int(ipaddress.IPv4Address(ipv4))))


def sixtofour(ipv4: str) -> str:
    """A 6to4 address (RFC 3056) of the site with this IPv4 address."""
    return str(
        ipaddress.IPv6Address((0x2002 << 112) | (int(ipaddress.IPv4Address(ipv4)) << 80) | 1)
    )


def teredo(ipv4: str) -> str:
    """A Teredo address (RFC 4380) whose client is this IPv4 address (stored inverted)."""
    client = int(ipaddress.IPv4Address(ipv4)) ^ 0xFFFFFFFF
    server = int(ipaddress.IPv4Address("198.51.100.9"))
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (server << 64) | client))


def nat64(ipv4: str) -> str:
    """The NAT64 well-known-prefix form (RFC 6052) of an IPv4 address."""
    return str(ipaddress.IPv6Address((0x0064FF9B << 96) | int(ipaddress.IPv4Address(ipv4))))


#: Every tunnel form of an IPv4 address, by tunnel name as decisions report it.
TUNNELS: Final[dict[str, Callable[[str], str]]] = {
    "ipv4_mapped": mapped,
    "6to4": sixtofour,
    "teredo": teredo,
    "nat64": nat64,
}


def _entries() -> tuple[list[RangeEntry], list[RangeEntry]]:
    def entry(network: str, record: NetworkRecord) -> RangeEntry:
        net = ipaddress.ip_network(network)
        return RangeEntry(net.version, int(net.network_address), int(net.broadcast_address), record)

    geo = [entry(net, rec) for net, rec in LOCATIONS.values()]
    kinds = [entry(net, NetworkRecord(kinds=k)) for net, k in KINDS.values()]
    return geo, kinds


def build_world() -> Snapshot:
    """Build the test world snapshot (location source first, kinds second)."""
    geo, kinds = _entries()
    data = build_snapshot(
        [make_source("test-geo", geo), make_source("test-kinds", kinds)],
        built_at=BUILT_AT,
        name="policy-test-world",
    )
    return Snapshot.from_bytes(data, origin="<policy-test-world>")


def policy(text: str, *, source: str = "test.toml", **params: Any) -> Policy:
    """Parse a policy from (indented) TOML text."""
    return parse_policy(textwrap.dedent(text), source=source, params=params or None)


@pytest.fixture(scope="session")
def world() -> Snapshot:
    """The test world snapshot (shared: snapshots are immutable)."""
    return build_world()


@pytest.fixture
def make_gf(world: Snapshot) -> Iterator[Callable[..., Geofence]]:
    """A factory of engines over the test world (``today`` defaults to :data:`TODAY`).

    Every engine made is closed at teardown (stops watchers and date timers).
    """
    made: list[Geofence] = []

    def make(pol: Policy | str, *, snapshot: Snapshot | None = None, **kwargs: Any) -> Geofence:
        kwargs.setdefault("today", lambda: TODAY)
        gf = Geofence(snapshot or world, pol, **kwargs)
        made.append(gf)
        return gf

    yield make
    for gf in made:
        gf.close()
