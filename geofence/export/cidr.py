"""Address ranges as CIDR blocks and text, for the edge formats."""

from __future__ import annotations

from collections.abc import Iterator
from socket import AF_INET, AF_INET6, inet_ntop

__all__ = ["address_text", "cidr_count", "cidr_text", "range_cidrs"]


def range_cidrs(first: int, last: int, bits: int) -> Iterator[tuple[int, int]]:
    """The fewest CIDR blocks covering ``first..last`` exactly, as ``(network, prefix length)``.

    Each step takes the largest block that starts at ``first`` (limited by the
    alignment of ``first``) and does not run past ``last``.

    Args:
        first: First address of the range.
        last: Last address (inclusive), ``>= first``.
        bits: Address width: 32 or 128.
    """
    while first <= last:
        align = (first & -first).bit_length() - 1 if first else bits
        span = (last - first + 1).bit_length() - 1
        size = min(align, span)
        yield first, bits - size
        first += 1 << size


def cidr_count(first: int, last: int, bits: int) -> int:
    """How many blocks :func:`range_cidrs` gives for ``first..last``."""
    n = 0
    while first <= last:
        align = (first & -first).bit_length() - 1 if first else bits
        size = min(align, (last - first + 1).bit_length() - 1)
        first += 1 << size
        n += 1
    return n


def address_text(version: int, value: int) -> str:
    """An address in its usual text form (IPv6 compressed, RFC 5952)."""
    if version == 4:
        return inet_ntop(AF_INET, value.to_bytes(4, "big"))
    return inet_ntop(AF_INET6, value.to_bytes(16, "big"))


def cidr_text(version: int, network: int, length: int) -> str:
    """A CIDR block as ``address/length``."""
    return f"{address_text(version, network)}/{length}"
