"""The one fast path: address text -> range search -> table entry.

A :class:`Lookup` answers the common request (a plain ``str`` address, no
context) by parsing the text, searching the partitions and returning the table
entry of the segment; everything else (a context, an IPv6 zone id, a tunnel
prefix, invalid text, any other type) goes to its *fallback*, the general Python
path, which stays the reference for those inputs.

Two implementations have the same behaviour:

* ``geofence._core.Lookup``, the compiled core (``geofence/_core.c``), used
  when the extension was built;
* :class:`PyLookup` below, the pure-Python twin: readable, used when the
  extension is absent or ``GEOFENCE_PURE_PYTHON=1`` is set.

The parity tests (``tests/test_core_parity.py``) hold them to identical answers.
:func:`core_info` says which one is active.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Sequence
from socket import AF_INET, AF_INET6, inet_pton
from typing import Any, Final

from geofence.snapshot.partition import TUNNEL_BY_ID, Partitions, segment

__all__ = ["ACTIVE", "Lookup", "PyLookup", "core_info", "make_lookup", "plain_address"]

#: Segment ids of tunnel prefixes: their entries are decided by the fallback.
TUNNEL_LOW: Final = min(TUNNEL_BY_ID)
TUNNEL_HIGH: Final = max(TUNNEL_BY_ID)

_from_bytes = int.from_bytes
_unpack_v6 = struct.Struct(">QQ").unpack


def plain_address(text: str) -> tuple[int, int] | None:
    """``(version, value)`` of plain address text, or ``None``.

    Plain means what :func:`geofence.addr.parse_address` accepts without its
    general machinery: dotted-quad IPv4 and IPv6 without a zone id, parsed as
    strictly (``socket.inet_pton``). ``None`` for anything else, valid or not
    (a zone id, whitespace, a hostname...): the general parser decides those.
    Tunnel prefixes are not unwrapped here; their segment ids say so.

    Args:
        text: Candidate address text.
    """
    try:
        if ":" in text:
            high, low = _unpack_v6(inet_pton(AF_INET6, text))
            return 6, (high << 64) | low
        return 4, _from_bytes(inet_pton(AF_INET, text), "big")
    except (OSError, ValueError, UnicodeEncodeError):
        # OSError: not this family; ValueError: a NUL character; UnicodeEncodeError:
        # a lone surrogate (inet_pton encodes its argument as UTF-8).
        return None


class PyLookup:
    """The pure-Python twin of ``geofence._core.Lookup``.

    Calling it with a plain address string answers from ``table``; any other
    call is handed to ``fallback`` unchanged.

    Args:
        parts: The partitions to search.
        table: Entry per segment id; negative ids index from the end.
        fallback: Called as ``fallback(ip)`` or ``fallback(ip, context)`` for
            whatever the table cannot answer (tunnel prefixes included).
    """

    __slots__ = ("_fallback", "_partitions", "_table")

    def __init__(
        self, parts: Partitions, table: Sequence[Any], fallback: Callable[..., Any]
    ) -> None:
        self._partitions = parts
        self._table = table
        self._fallback = fallback

    def __call__(self, ip: Any, context: Any = None) -> Any:
        """The table entry for ``ip``, or what ``fallback`` returns."""
        if context is not None:
            return self._fallback(ip, context)
        if type(ip) is str:
            found = plain_address(ip)
            if found is not None:
                version, value = found
                r = self._partitions
                sid = (r.v4_ids if version == 4 else r.v6_ids)[segment(r, version, value)]
                if not TUNNEL_LOW <= sid <= TUNNEL_HIGH:
                    return self._table[sid]
        return self._fallback(ip)

    def many(self, ips: Iterable[Any]) -> list[Any]:
        """``[self(ip) for ip in ips]``."""
        return [self(ip) for ip in ips]

    def many_v4(self, values: Any) -> list[Any]:
        """Entries for a buffer of IPv4 addresses as native ``uint32``, in order."""
        r = self._partitions
        table = self._table
        out = []
        for value in memoryview(values).cast("B").cast("I"):
            sid = r.v4_ids[segment(r, 4, value)]
            out.append(table[sid])
        return out


def _compiled() -> Any:
    """The compiled core's module, or ``None`` (not built, or turned off)."""
    if os.environ.get("GEOFENCE_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from geofence import _core  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    return _core


_CORE: Final = _compiled()

#: The implementation in use: ``geofence._core.Lookup`` or :class:`PyLookup`.
Lookup: Final[Callable[[Partitions, Sequence[Any], Callable[..., Any]], Any]] = (
    _CORE.Lookup if _CORE is not None else PyLookup
)

#: ``"compiled"`` or ``"python"``.
ACTIVE: Final = "compiled" if _CORE is not None else "python"


def make_lookup(
    parts: Partitions, table: Sequence[Any], fallback: Callable[..., Any], *, pure: bool = False
) -> Any:
    """A lookup over ``parts`` and ``table`` with the active core (``pure``: the twin)."""
    if pure or _CORE is None:
        return PyLookup(parts, table, fallback)
    return _CORE.Lookup(parts, table, fallback)


def core_info() -> dict[str, str]:
    """Which core answers ``decide``: ``{"core": "compiled" | "python", "reason": ...}``."""
    if _CORE is not None:
        return {"core": "compiled", "reason": f"extension {_CORE.__file__}"}
    if os.environ.get("GEOFENCE_PURE_PYTHON", "") not in ("", "0"):
        return {"core": "python", "reason": "GEOFENCE_PURE_PYTHON is set"}
    return {"core": "python", "reason": "the compiled extension is not built"}
