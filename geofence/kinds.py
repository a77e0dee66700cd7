"""Closed vocabularies: network kinds and special address categories.

Location ("where") and network kind ("what sort of network") are separate axes.
A range with no kind is :attr:`NetworkKind.UNKNOWN`, which means "not in our
data", never "residential".
"""

from __future__ import annotations

import enum

__all__ = ["NetworkKind", "SpecialRange", "kinds_from_names", "kinds_to_names"]


class NetworkKind(enum.IntFlag):
    """What kind of network an address belongs to (several may apply at once)."""

    UNKNOWN = 0
    """No source in the snapshot said anything about this network's kind."""

    HOSTING = 1
    """A data centre, cloud or hosting provider (AWS, GCP, Azure, VPS hosts...)."""

    VPN = 2
    """A commercial or self-run VPN exit: location is the exit's, not the user's."""

    TOR = 4
    """A Tor exit node."""

    PUBLIC_PROXY = 8
    """An open or public proxy."""

    RESIDENTIAL_PROXY = 16
    """A residential proxy network: traffic relayed through consumer connections."""

    RELAY = 32
    """A location-preserving relay (iCloud Private Relay, WARP): egress maps to the
    user's coarse real location, published by the operator."""

    CDN = 64
    """Content-delivery or edge infrastructure fronting other people's traffic."""

    BOT = 128
    """A declared crawler or automated agent (search engines, AI crawlers)."""


#: Kinds that hide the user's location (a workaround when the policy restricts places).
ANONYMISING = (
    NetworkKind.VPN | NetworkKind.TOR | NetworkKind.PUBLIC_PROXY | (NetworkKind.RESIDENTIAL_PROXY)
)

_BY_NAME = {k.name.lower(): k for k in NetworkKind if k.name}


def kinds_from_names(names: object) -> NetworkKind:
    """Parse kind names (case-insensitive, ``-`` or ``_``) into a flag.

    Args:
        names: An iterable of names such as ``["vpn", "public-proxy"]``.

    Returns:
        The union of the named kinds.

    Raises:
        ValueError: A name is not a known kind, or ``names`` is not a list of strings.
    """
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise ValueError(f"kinds must be a list of names, got {names!r}")
    result = NetworkKind.UNKNOWN
    for name in names:  # type: ignore[attr-defined,unused-ignore]  # checked iterable above
        if not isinstance(name, str):
            raise ValueError(f"kind names must be strings, got {name!r}")
        key = name.strip().lower().replace("-", "_")
        if key not in _BY_NAME:
            known = ", ".join(sorted(_BY_NAME))
            raise ValueError(f"unknown network kind {name!r}; known kinds: {known}")
        result |= _BY_NAME[key]
    return result


def kinds_to_names(kinds: int) -> list[str]:
    """Names of the kinds set in ``kinds``, lower case, in flag order."""
    return [k.name.lower() for k in NetworkKind if k.value and k.name and kinds & k.value]


class SpecialRange(enum.StrEnum):
    """Address blocks that are recognised without a data lookup (IANA special-purpose).

    A ``str`` enum: ``SpecialRange.PRIVATE == "private"``.
    """

    PRIVATE = "private"
    """RFC 1918 private IPv4 and RFC 4193 unique local IPv6 (fc00::/7)."""

    LOOPBACK = "loopback"
    """127.0.0.0/8 and ::1."""

    LINK_LOCAL = "link_local"
    """169.254.0.0/16 and fe80::/10."""

    DOCUMENTATION = "documentation"
    """RFC 5737 and RFC 3849 documentation ranges."""

    SHARED = "shared"
    """RFC 6598 carrier-grade NAT shared address space (100.64.0.0/10)."""

    MULTICAST = "multicast"
    """224.0.0.0/4 and ff00::/8."""

    UNSPECIFIED = "unspecified"
    """0.0.0.0/8 ("this network") and ::."""

    RESERVED = "reserved"
    """Other IANA special-purpose blocks (240.0.0.0/4, benchmarking, 6bone, ...)."""
