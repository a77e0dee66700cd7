"""The one fast path: address text -> range search -> table entry.

A lookup (:func:`make_lookup`) answers the common request (a plain ``str``
address, no context) by parsing the text, searching the partitions and returning the table
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
from array import array
from collections.abc import Callable, Iterable, Sequence
from socket import AF_INET, AF_INET6, inet_pton
from typing import Any, Final

from geofence.addr import ParsedAddress
from geofence.snapshot import partition
from geofence.snapshot.partition import (
    TUNNEL_BY_ID,
    V4_TOP,
    V6_TOP,
    Column,
    Partitions,
    Runs,
    segment,
)

__all__ = [
    "ACTIVE",
    "PyLookup",
    "core_function",
    "core_info",
    "make_lookup",
    "plain_address",
    "relabel_runs",
]

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
            whatever the table cannot answer.
        tunnel_low: Lowest segment id the fallback answers (tunnel prefixes).
        tunnel_high: Highest such id.
        parsed_type: :class:`~geofence.addr.ParsedAddress` to answer parsed
            addresses without a tunnel from the table too (the engine's
            ``decide``), or ``None`` to hand them to ``fallback``.
    """

    __slots__ = ("_fallback", "_parsed_type", "_partitions", "_table", "_tunnels")

    def __init__(
        self,
        parts: Partitions,
        table: Sequence[Any],
        fallback: Callable[..., Any],
        tunnel_low: int,
        tunnel_high: int,
        parsed_type: type[ParsedAddress] | None = None,
    ) -> None:
        self._partitions = parts
        self._table = tuple(table)
        self._fallback = fallback
        self._tunnels = range(tunnel_low, tunnel_high + 1)
        self._parsed_type = parsed_type

    def __call__(self, ip: Any, context: Any = None) -> Any:
        """The table entry for ``ip``, or what ``fallback`` returns."""
        if context is not None:
            return self._fallback(ip, context)
        found = None
        if type(ip) is str:
            found = plain_address(ip)
        elif type(ip) is self._parsed_type and ip.tunnel is None and 0 <= ip.value <= V6_TOP:
            found = (ip.version, ip.value) if ip.version == 6 or ip.value <= V4_TOP else None
        if found is not None:
            entry = self._entry(*found)
            if entry is not _FALLBACK:
                return entry
        return self._fallback(ip)

    def _entry(self, version: int, value: int) -> Any:
        """The table entry for an address, or ``_FALLBACK`` (a tunnel prefix)."""
        parts = self._partitions
        sid = (parts.v4_ids if version == 4 else parts.v6_ids)[segment(parts, version, value)]
        return _FALLBACK if sid in self._tunnels else self._table[sid]

    def many(self, items: Iterable[Any]) -> list[Any]:
        """``[self(ip) for ip in items]``."""
        return [self(ip) for ip in items]

    def many_v4(self, packed: Any) -> list[Any]:
        """Entries for a buffer of packed big-endian IPv4 addresses (4 bytes each)."""
        return self._many_packed(packed, 4)

    def many_v6(self, packed: Any) -> list[Any]:
        """Entries for a buffer of packed big-endian IPv6 addresses (16 bytes each)."""
        return self._many_packed(packed, 6)

    def _many_packed(self, packed: Any, version: int) -> list[Any]:
        raw = memoryview(packed).tobytes()
        width = 4 if version == 4 else 16
        if len(raw) % width:
            raise ValueError(
                f"many_v{version}: buffer length {len(raw)} is not a multiple of {width}"
            )
        out = []
        for k in range(0, len(raw), width):
            item = raw[k : k + width]
            entry = self._entry(version, _from_bytes(item, "big"))
            out.append(self._fallback(item) if entry is _FALLBACK else entry)
        return out

    def many_utf8(self, data: Any, bounds: Any) -> list[Any]:
        """Entries for UTF-8 strings in ``data`` at int64 ``(start, stop)`` pairs.

        A negative start marks a null, handed to the fallback as ``None``.
        """
        raw = memoryview(data).tobytes()
        pairs = memoryview(memoryview(bounds).tobytes()).cast("q")
        out = []
        for k in range(0, len(pairs), 2):
            start, stop = pairs[k], pairs[k + 1]
            if start >= 0 and not start <= stop <= len(raw):
                raise ValueError(f"many_utf8: item {k // 2} lies outside the data")
            out.append(self(raw[start:stop].decode()) if start >= 0 else self._fallback(None))
        return out


#: Marks "the fallback decides" (a tunnel prefix) in :meth:`PyLookup._entry`.
_FALLBACK: Final = object()


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

#: ``"compiled"`` or ``"python"``.
ACTIVE: Final = "compiled" if _CORE is not None else "python"


def make_lookup(
    parts: Partitions,
    table: Sequence[Any],
    fallback: Callable[..., Any],
    *,
    pure: bool = False,
    parsed: bool = False,
) -> Any:
    """A lookup over ``parts`` and ``table`` with the active core (``pure``: the twin).

    Tunnel prefix segments are always answered by ``fallback`` (it unwraps them).
    With ``parsed``, a :class:`~geofence.addr.ParsedAddress` without a tunnel is
    answered from the table as well (what the middleware passes to ``decide``).
    """
    parsed_type = ParsedAddress if parsed else None
    if pure or _CORE is None:
        return PyLookup(parts, table, fallback, TUNNEL_LOW, TUNNEL_HIGH, parsed_type)
    return _CORE.Lookup(parts, table, fallback, TUNNEL_LOW, TUNNEL_HIGH, parsed_type)


def core_function(name: str) -> Callable[..., Any] | None:
    """A function of the active compiled core, or ``None`` (pure Python, or an older build).

    For the other users of the extension (the snapshot checks of
    :mod:`geofence.snapshot.invariants`), so that this module stays the one
    place that decides whether it is used.
    """
    function: Callable[..., Any] | None = getattr(_CORE, name, None)
    return function


def _compiled_relabel_runs(ids: Column, relabel: array[int]) -> tuple[array[int], array[int]]:
    heads, labels = _CORE.relabel_runs(ids, relabel)
    return array("i", heads), array("i", labels)


#: :func:`geofence.snapshot.partition.relabel_runs` with the active core (policy
#: compilation relabels every segment of the data once).
relabel_runs: Final[Runs] = partition.relabel_runs if _CORE is None else _compiled_relabel_runs


def core_info() -> dict[str, str]:
    """Which core answers ``decide``: ``{"core": "compiled" | "python", "reason": ...}``."""
    if _CORE is not None:
        return {"core": "compiled", "reason": f"extension {_CORE.__file__}"}
    if os.environ.get("GEOFENCE_PURE_PYTHON", "") not in ("", "0"):
        return {"core": "python", "reason": "GEOFENCE_PURE_PYTHON is set"}
    return {"core": "python", "reason": "the compiled extension is not built"}
