"""Strict IP address parsing, tunnel unwrapping and special-purpose ranges.

Accepted inputs (see :func:`parse_address`):

* ``str`` in the canonical textual forms of RFC 4291 / RFC 5952 (IPv6) and the
  dotted-quad form (IPv4). IPv4 octets with leading zeros are refused because
  ``010`` is octal to some parsers and decimal to others (CVE-2021-29921).
  Surrounding whitespace, hostnames, CIDR suffixes and brackets are refused.
* IPv6 zone ids (RFC 4007, ``fe80::1%eth0``) are accepted, kept in
  :attr:`ParsedAddress.zone` and ignored for lookups: a zone names an interface
  on the local host and says nothing about location.
* packed ``bytes`` of length 4 or 16, ``int`` with an explicit ``version``,
  and :mod:`ipaddress` address objects.

IPv6 addresses that embed an IPv4 address are unwrapped, and the tunnel is
recorded: IPv4-mapped (``::ffff:0:0/96``, RFC 4291), 6to4 (``2002::/16``,
RFC 3056), Teredo (``2001::/32``, RFC 4380; the client address is stored
inverted) and the NAT64 well-known prefix (``64:ff9b::/96``, RFC 6052).
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from bisect import bisect_right
from dataclasses import dataclass
from typing import Final

from geofence.errors import InvalidAddressError
from geofence.kinds import SpecialRange

__all__ = [
    "SPECIAL_RANGES",
    "ParsedAddress",
    "TunnelKind",
    "address_text",
    "parse_address",
    "special_range",
    "unwrap_ipv6",
]

V4_MAX = (1 << 32) - 1
V6_MAX = (1 << 128) - 1
_ZONE_MAX = 64
_SHOW_MAX = 60


class TunnelKind(enum.StrEnum):
    """How an IPv4 address was carried inside an IPv6 address (a ``str`` enum)."""

    IPV4_MAPPED = "ipv4_mapped"
    """``::ffff:a.b.c.d`` (RFC 4291 §2.5.5.2), handed out by dual-stack sockets."""

    SIXTOFOUR = "6to4"
    """``2002:AABB:CCDD::/48`` (RFC 3056): the IPv4 address of the 6to4 site."""

    TEREDO = "teredo"
    """``2001:0::/32`` (RFC 4380): the client's public IPv4 address, bit-inverted."""

    NAT64 = "nat64"
    """``64:ff9b::/96`` (RFC 6052): an IPv4 destination synthesised by DNS64/NAT64."""


# (prefix value, prefix length) of each tunnel, checked in this order.
_TUNNELS: tuple[tuple[TunnelKind, int, int], ...] = (
    (TunnelKind.IPV4_MAPPED, 0xFFFF << 32, 96),
    (TunnelKind.NAT64, 0x0064FF9B << 96, 96),
    (TunnelKind.TEREDO, 0x20010000 << 96, 32),
    (TunnelKind.SIXTOFOUR, 0x2002 << 112, 16),
)

#: Tunnel prefixes as (kind, first, last) over the IPv6 space.
TUNNEL_RANGES: tuple[tuple[TunnelKind, int, int], ...] = tuple(
    (kind, prefix, prefix | ((1 << (128 - length)) - 1)) for kind, prefix, length in _TUNNELS
)

# The top 16 bits of every tunnel prefix (all are /16 or longer): an address
# whose top 16 bits are not among them lies in no tunnel prefix.
_TUNNEL_TOPS: Final = frozenset(
    top for _kind, first, last in TUNNEL_RANGES for top in range(first >> 112, (last >> 112) + 1)
)


def unwrap_ipv6(value: int) -> tuple[TunnelKind, int] | None:
    """Return the tunnel kind and embedded IPv4 integer of an IPv6 integer, if any.

    Args:
        value: An IPv6 address as an integer.

    Returns:
        ``(kind, ipv4)`` when ``value`` lies in a tunnel prefix, else ``None``.
    """
    if value >> 112 not in _TUNNEL_TOPS:  # nearly every address: one shift, one set probe
        return None
    for kind, first, last in TUNNEL_RANGES:
        if first <= value <= last:
            if kind is TunnelKind.SIXTOFOUR:
                return kind, (value >> 80) & V4_MAX
            if kind is TunnelKind.TEREDO:
                return kind, (~value) & V4_MAX
            return kind, value & V4_MAX
    return None


def _net(text: str, special: SpecialRange) -> tuple[int, int, int, SpecialRange]:
    net = ipaddress.ip_network(text)
    return net.version, int(net.network_address), int(net.broadcast_address), special


_P, _L, _LL, _D = (
    SpecialRange.PRIVATE,
    SpecialRange.LOOPBACK,
    SpecialRange.LINK_LOCAL,
    SpecialRange.DOCUMENTATION,
)
_M, _U, _R, _S = (
    SpecialRange.MULTICAST,
    SpecialRange.UNSPECIFIED,
    SpecialRange.RESERVED,
    SpecialRange.SHARED,
)

#: IANA special-purpose blocks recognised without a data lookup, as
#: ``(version, first, last, category)``, disjoint and sorted per version.
#: Sources: the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890).
SPECIAL_RANGES: tuple[tuple[int, int, int, SpecialRange], ...] = tuple(
    sorted(
        (
            _net("0.0.0.0/8", _U),  # RFC 791 "this network"
            _net("10.0.0.0/8", _P),  # RFC 1918
            _net("100.64.0.0/10", _S),  # RFC 6598
            _net("127.0.0.0/8", _L),  # RFC 1122
            _net("169.254.0.0/16", _LL),  # RFC 3927
            _net("172.16.0.0/12", _P),  # RFC 1918
            _net("192.0.0.0/24", _R),  # RFC 6890 IETF protocol assignments
            _net("192.0.2.0/24", _D),  # RFC 5737 TEST-NET-1
            _net("192.88.99.0/24", _R),  # RFC 7526 deprecated 6to4 relay anycast
            _net("192.168.0.0/16", _P),  # RFC 1918
            _net("198.18.0.0/15", _R),  # RFC 2544 benchmarking
            _net("198.51.100.0/24", _D),  # RFC 5737 TEST-NET-2
            _net("203.0.113.0/24", _D),  # RFC 5737 TEST-NET-3
            _net("224.0.0.0/4", _M),  # RFC 5771
            _net("240.0.0.0/4", _R),  # RFC 1112 reserved, incl. limited broadcast
            _net("::/128", _U),  # RFC 4291
            _net("::1/128", _L),  # RFC 4291
            (6, 2, V4_MAX, _R),  # rest of the deprecated IPv4-compatible ::/96
            _net("64:ff9b:1::/48", _P),  # RFC 8215 local-use NAT64
            _net("100::/64", _R),  # RFC 6666 discard-only
            _net("2001:2::/48", _R),  # RFC 5180 benchmarking
            _net("2001:10::/28", _R),  # RFC 4843 ORCHID (deprecated)
            _net("2001:20::/28", _R),  # RFC 7343 ORCHIDv2
            _net("2001:db8::/32", _D),  # RFC 3849
            _net("3fff::/20", _D),  # RFC 9637
            _net("fc00::/7", _P),  # RFC 4193 unique local
            _net("fe80::/10", _LL),  # RFC 4291
            _net("fec0::/10", _R),  # RFC 3879 deprecated site-local
            _net("ff00::/8", _M),  # RFC 4291
        )
    )
)


def special_range(version: int, value: int) -> SpecialRange | None:
    """Return the special-purpose category of an address, or ``None`` if global.

    Args:
        version: 4 or 6.
        value: The address as an integer (already unwrapped from any tunnel).
    """
    tops, shift, firsts, table = _SPECIAL_INDEX[version]
    if value >> shift not in tops:  # most addresses: no special range shares their top bits
        return None
    i = bisect_right(firsts, value) - 1
    if i >= 0:
        _first, last, category = table[i]
        if value <= last:
            return category
    return None


_SpecialIndex = tuple[frozenset[int], int, list[int], list[tuple[int, int, SpecialRange]]]


def _special_index() -> dict[int, _SpecialIndex]:
    """The special ranges of each family, ready for :func:`special_range`.

    Per family: the top bits (/8, /16) any special range touches, the shift
    that gives them, and the ranges sorted by first address for a bisect.
    """
    out: dict[int, _SpecialIndex] = {}
    for version, shift in ((4, 24), (6, 112)):
        rows = sorted((f, la, c) for v, f, la, c in SPECIAL_RANGES if v == version)
        tops = frozenset(t for f, la, _ in rows for t in range(f >> shift, (la >> shift) + 1))
        out[version] = (tops, shift, [f for f, _, _ in rows], rows)
    return out


# Sorted per family for a bisect: parse_address runs on every header hop.
_SPECIAL_INDEX: Final = _special_index()


# A plain slotted class (no frozen-dataclass __init__, which pays object.__setattr__
# per field): the client resolution builds one per forwarded hop. Hashable by
# value; instances are never changed after construction and are shared freely.
@dataclass(slots=True, unsafe_hash=True)
class ParsedAddress:
    """An address after strict parsing and tunnel unwrapping (treat it as read-only)."""

    version: int
    """4 or 6: the family of the effective address (4 after unwrapping a tunnel)."""

    value: int
    """The effective address as an integer; this is what lookups use."""

    tunnel: TunnelKind | None = None
    """How the effective IPv4 address was carried in IPv6, or ``None``."""

    outer: int | None = None
    """The original IPv6 address as an integer when ``tunnel`` is set."""

    zone: str | None = None
    """The IPv6 zone id (``eth0`` in ``fe80::1%eth0``), kept but ignored for lookups."""

    special: SpecialRange | None = None
    """The special-purpose category when the address is not globally routable."""

    @property
    def text(self) -> str:
        """Canonical text of the effective address (RFC 5952 for IPv6)."""
        return address_text(self.version, self.value)

    @property
    def original_text(self) -> str:
        """Canonical text of the address as given (the IPv6 form when tunnelled)."""
        if self.outer is not None:
            return address_text(6, self.outer)
        text = self.text
        return f"{text}%{self.zone}" if self.zone else text

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The effective address as an :mod:`ipaddress` object."""
        if self.version == 4:
            return ipaddress.IPv4Address(self.value)
        return ipaddress.IPv6Address(self.value)


def address_text(version: int, value: int) -> str:
    """Format an integer address canonically.

    Args:
        version: 4 or 6.
        value: The address as an integer in range for ``version``.
    """
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 3] + "..."


def _parse_text(text: str) -> tuple[int, int, str | None]:
    """Parse text into (version, value, zone) or raise InvalidAddressError."""
    if not text or text.isspace():
        raise InvalidAddressError(f"empty address {_show(text)}")
    if text != text.strip():
        raise InvalidAddressError(f"address {_show(text)} has surrounding whitespace")
    if len(text) > 45 + 1 + _ZONE_MAX:
        raise InvalidAddressError(f"address {_show(text)} is too long to be an IP address")
    if "\x00" in text:
        raise InvalidAddressError(f"address {_show(text)} contains a NUL character")
    # inet_pton encodes its argument as UTF-8, so a lone surrogate raises
    # UnicodeEncodeError rather than OSError; both mean "not this family".
    # IPv4 text never contains ":": skipping the attempt saves IPv6 text a
    # failed inet_pton (an exception, a third of the parse).
    if ":" not in text:
        try:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big"), None
        except (OSError, UnicodeEncodeError):
            pass
    zone: str | None = None
    body = text
    if "%" in text:
        body, _, zone = text.partition("%")
        # Non-printable zones (controls such as a newline, lone surrogates) are refused:
        # the zone is echoed into logs and audit lines.
        if (
            not zone
            or len(zone) > _ZONE_MAX
            or not zone.isprintable()
            or any(c in zone for c in "%/ \t[]")
        ):
            raise InvalidAddressError(f"address {_show(text)} has an invalid IPv6 zone id")
        if ":" not in body:
            raise InvalidAddressError(f"address {_show(text)}: zone ids are only valid on IPv6")
    try:
        return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, body), "big"), zone
    except (OSError, UnicodeEncodeError):
        pass
    if "." in body and ":" not in body:
        parts = body.split(".")
        if len(parts) == 4 and all(p.isdigit() and p.isascii() for p in parts):
            if any(len(p) > 1 and p[0] == "0" for p in parts):
                raise InvalidAddressError(
                    f"address {_show(text)}: IPv4 octet with a leading zero is ambiguous (octal)"
                )
            raise InvalidAddressError(f"address {_show(text)}: IPv4 octet out of range 0-255")
        if any(c.isalpha() for c in body):
            raise InvalidAddressError(
                f"{_show(text)} is not an IP address (hostnames are not resolved)"
            )
    if "/" in body:
        raise InvalidAddressError(f"{_show(text)} is a network, not an address")
    raise InvalidAddressError(f"{_show(text)} is not a valid IPv4 or IPv6 address")


def parse_address(
    value: str | bytes | int | ipaddress.IPv4Address | ipaddress.IPv6Address,
    *,
    version: int | None = None,
    unwrap: bool = True,
) -> ParsedAddress:
    """Parse an address strictly, unwrap tunnels and classify special ranges.

    Args:
        value: ``str``, packed ``bytes`` (4 or 16), ``int`` (needs ``version``)
            or an :mod:`ipaddress` address.
        version: Required with an ``int``; with other types it must match if given.
        unwrap: Unwrap IPv4 addresses embedded in IPv6 tunnel prefixes.

    Returns:
        The parsed address.

    Raises:
        InvalidAddressError: ``value`` is not an acceptable address.
    """
    zone: str | None = None
    if isinstance(value, str):
        ver, num, zone = _parse_text(value)
    elif isinstance(value, bool):
        raise InvalidAddressError(f"{value!r} is a bool, not an address")
    elif isinstance(value, int):
        if version not in (4, 6):
            raise InvalidAddressError(
                f"integer address {_show(value)} needs version=4 or version=6"
            )
        limit = V4_MAX if version == 4 else V6_MAX
        if not 0 <= value <= limit:
            raise InvalidAddressError(
                f"integer {_show(value)} is out of range for IPv{version} (0..{limit})"
            )
        ver, num = version, value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) == 4:
            ver = 4
        elif len(raw) == 16:
            ver = 6
        else:
            raise InvalidAddressError(f"packed address must be 4 or 16 bytes, got {len(raw)} bytes")
        num = int.from_bytes(raw, "big")
    elif isinstance(value, ipaddress.IPv4Address):
        ver, num = 4, int(value)
    elif isinstance(value, ipaddress.IPv6Address):
        ver, num = 6, int(value)
        zone = value.scope_id
    else:
        raise InvalidAddressError(
            f"unsupported address type {type(value).__name__}: {_show(value)}"
        )
    if version is not None and not isinstance(value, int) and version != ver:
        raise InvalidAddressError(f"{_show(value)} is IPv{ver}, but version={version} was given")
    tunnel: TunnelKind | None = None
    outer: int | None = None
    if ver == 6 and unwrap:
        found = unwrap_ipv6(num)
        if found is not None:
            tunnel, inner = found
            outer, ver, num = num, 4, inner
    return ParsedAddress(ver, num, tunnel, outer, zone, special_range(ver, num))


def parse_plain(text: str) -> ParsedAddress | None:
    """Parse text with no zone id quickly; ``None`` when :func:`parse_address` would fail.

    The same result as ``parse_address(text)`` for every string without ``%``
    (a property test checks it), in one call: the client address resolution
    parses one forwarded address per request with it. Tunnel prefixes and
    special ranges are recognised as by :func:`parse_address`.

    Args:
        text: Candidate address text (a ``%`` makes it return ``None``).
    """
    try:
        if ":" in text:
            if "%" in text:
                return None
            value = _from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
            if value >> 112 in _TUNNEL_TOPS:  # maybe a tunnel: the general path unwraps
                return parse_address(text)
            return ParsedAddress(6, value, None, None, None, special_range(6, value))
        value = _from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError, UnicodeEncodeError, InvalidAddressError):
        # inet_pton: OSError when invalid, ValueError for a NUL character,
        # UnicodeEncodeError for lone surrogates.
        return None
    return ParsedAddress(4, value, None, None, None, special_range(4, value))


_from_bytes = int.from_bytes
