"""Batch decisions (``Geofence.decide_many``).

With the compiled core, every batch is one call into C (``geofence._core.Lookup``):

* ``list[str]`` (any iterable): ``many`` parses and searches all items with the
  GIL released, then gathers the decisions;
* numpy ``uint32`` (IPv4, ``version=4``) and IPv6 arrays (``(n, 2)`` unsigned
  64-bit halves, or 16-byte packed items, ``version=6``): ``many_v4`` /
  ``many_v6`` over the packed big-endian addresses, GIL released;
* pyarrow string arrays: ``many_utf8`` reads the array's UTF-8 data and offsets
  in place, without a Python ``str`` per item.

Whatever the table cannot answer (tunnel prefixes, zone ids, invalid items) goes
to the state's general path, in input order, so the result always equals
``[gf.decide(ip) for ip in ips]`` and the first invalid item is the one raised.

With the pure-Python core (:class:`geofence.snapshot.search.PyLookup`), the same
entry points loop in Python, except that numpy does the searching where it can.
With numpy installed, a batch of 64 or more address strings is then decided in
four steps:

1. the batch is split by family (``":" in s``) and each family is packed by
   ``socket.inet_pton`` through ``map()`` into one buffer, with no Python frame
   per address;
2. numpy views the buffers as unsigned integers (IPv4) and pairs of 64-bit
   halves (IPv6);
3. each family is searched with ``numpy.searchsorted`` over the snapshot's
   start columns, with the queries sorted first (sorted queries walk the
   start column in order, which measured faster than random probes even after
   paying for the sort);
4. the segment ids index an object array of the compiled decisions.

If an item breaks step 1 (not a ``str``, a zone id, invalid text), the batch is
packed item by item into 17-byte records instead (a family byte, then the
address) and the items that fail are marked; they, the IPv6 addresses in a
tunnel prefix and those whose segment shares its high 64 bits with the next
one go through the scalar path.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from itertools import compress, repeat
from operator import not_
from socket import AF_INET, AF_INET6, inet_pton
from typing import TYPE_CHECKING, Any

from geofence.addr import ParsedAddress, parse_address
from geofence.decision import Decision
from geofence.errors import InvalidAddressError
from geofence.snapshot.partition import TUNNEL_BY_ID, segment
from geofence.snapshot.search import PyLookup

if TYPE_CHECKING:
    from geofence.engine import Geofence, _State

__all__ = ["INVALID", "decide_many", "decide_many_marked", "invalid_decision"]

#: Batches shorter than this use the scalar loop (numpy's fixed costs dominate).
VECTOR_MIN = 64

_V4_HEAD = b"\x04" + bytes(12)  # family 4, then ::/96 padding before the 4 address bytes
_V6_HEAD = b"\x06"
_BAD = bytes(17)  # family 0: decided by the scalar path
_TUNNEL_LOW, _TUNNEL_HIGH = min(TUNNEL_BY_ID), max(TUNNEL_BY_ID)


def decide_many(gf: Geofence, ips: Iterable[Any], *, version: int | None = None) -> list[Decision]:
    """See :meth:`geofence.Geofence.decide_many`."""
    # One state for the whole batch: a reload during it must not mix old and new.
    state: _State = gf._state
    lookup = state.lookup
    pure = isinstance(lookup, PyLookup)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is an optional extra
        np = None  # type: ignore[assignment]
    if np is not None and isinstance(ips, np.ndarray):
        packed = _packed_array(np, ips, version)
        if packed is not None:
            width, buffer = packed
            if width == 4 and pure:
                return _vector_v4(np, state, buffer)
            if width == 4:
                return lookup.many_v4(buffer)  # type: ignore[no-any-return]
            return lookup.many_v6(buffer)  # type: ignore[no-any-return]
    if version is None and not isinstance(ips, (list, tuple)):
        arrow = _arrow_batch(np, lookup, ips)
        if arrow is not None:
            return arrow
    items = ips if isinstance(ips, (list, tuple)) else list(ips)
    if version is not None:
        return [gf._decide_parsed(state, parse_address(x, version=version)) for x in items]
    if not pure:
        return lookup.many(items)  # type: ignore[no-any-return]
    if np is not None and len(items) >= VECTOR_MIN:
        return _vector_strings(gf, state, items, np)
    return [state.decide(ip) for ip in items]


def _packed_array(np: Any, ips: Any, version: int | None) -> tuple[int, Any] | None:
    """``(4 | 16, big-endian packed addresses)`` of a numpy array, or ``None``.

    IPv4: a 1-d integer array with ``version=4`` (each value checked to lie in
    0..2**32-1). IPv6 (``version=6`` or no version): an ``(n, 2)`` array of
    unsigned 64-bit ``[high, low]`` halves, or 16-byte items (``S16``/``V16``).
    Other arrays are decided item by item (``None``).

    Raises:
        InvalidAddressError: An IPv4 integer is out of range.
    """
    kind = ips.dtype.kind
    if kind in "iu" and ips.ndim == 1 and version == 4:
        if ips.size and (int(ips.min()) < 0 or int(ips.max()) > 0xFFFFFFFF):
            high = int(ips.max())
            parse_address(high if high > 0xFFFFFFFF else int(ips.min()), version=4)
        return 4, np.ascontiguousarray(ips, dtype=">u4")
    if version in (None, 6) and kind == "u" and ips.ndim == 2 and ips.shape[1] == 2:
        return 16, np.ascontiguousarray(ips, dtype=">u8")
    if version in (None, 6) and kind in "SV" and ips.ndim == 1 and ips.dtype.itemsize == 16:
        return 16, np.ascontiguousarray(ips)
    return None


def _arrow_batch(np: Any, lookup: Any, ips: Any) -> list[Decision] | None:
    """Decisions for a pyarrow string array (or chunked array), or ``None`` if it is not one.

    The strings are read in place: the array's UTF-8 data buffer and its
    offsets become ``(start, stop)`` pairs, a null a negative start (decided
    like ``None``, which is refused as an address).
    """
    pa = sys.modules.get("pyarrow")
    if pa is None or np is None or not isinstance(ips, (pa.Array, pa.ChunkedArray)):
        return None
    chunks = ips.chunks if isinstance(ips, pa.ChunkedArray) else [ips]
    out: list[Decision] = []
    for chunk in chunks:
        if pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type):
            _validity, offsets, data = chunk.buffers()
            width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
            n = len(chunk)
            ends = np.frombuffer(offsets, dtype=width)[chunk.offset : chunk.offset + n + 1]
            bounds = np.empty((n, 2), dtype=np.int64)
            bounds[:, 0] = ends[:-1]
            bounds[:, 1] = ends[1:]
            if chunk.null_count:
                bounds[chunk.is_null().to_numpy(zero_copy_only=False), 0] = -1
            out += lookup.many_utf8(b"" if data is None else data, bounds)
        else:
            out += [lookup(ip) for ip in chunk.to_pylist()]
    return out


def _vector_v4(np: Any, state: _State, packed: Any) -> list[Decision]:
    """IPv4 integers searched by numpy (the pure-Python core's batch path)."""
    c = state.compiled
    vids = _search_sorted(
        np,
        np.frombuffer(c.v4_starts, dtype=np.uint32),
        np.frombuffer(c.v4_ids, dtype=np.int32),
        packed.astype(np.uint32),
    )
    return _decisions(np, c.table, vids).tolist()  # type: ignore[no-any-return]


def _decide_one(gf: Geofence, state: _State, ip: Any) -> Decision:
    """Any accepted input, decided by the scalar path of ``state``."""
    return gf._decide_parsed(state, ip if isinstance(ip, ParsedAddress) else parse_address(ip))


def _pack(ip: Any) -> bytes:
    """One 17-byte record, or :data:`_BAD` when the scalar path must decide ``ip``."""
    try:
        if ":" in ip:
            return _V6_HEAD + inet_pton(AF_INET6, ip)
        return _V4_HEAD + inet_pton(AF_INET, ip)
    except (OSError, TypeError, ValueError, UnicodeEncodeError):
        return _BAD


def _vector_strings(gf: Geofence, state: _State, items: Sequence[Any], np: Any) -> list[Decision]:
    try:
        # The common case: split by family, then pack each family with
        # inet_pton through map() (no Python frame per address).
        is6 = [":" in s for s in items]
        q4 = b"".join(map(inet_pton, repeat(AF_INET), compress(items, map(not_, is6))))
        q6 = b"".join(map(inet_pton, repeat(AF_INET6), compress(items, is6)))
    except (OSError, TypeError, ValueError, UnicodeEncodeError):
        # Something needs care (not a str, a zone id, invalid text): pack item
        # by item into 17-byte records; the rows that fail go to the scalar path.
        rec = np.frombuffer(
            b"".join([_pack(s) for s in items]),
            dtype=np.dtype([("f", "u1"), ("hi", ">u8"), ("lo", ">u8")]),
        )
        family = rec["f"]
        w4, w6 = np.flatnonzero(family == 4), np.flatnonzero(family == 6)
        return _finish(
            gf,
            state,
            items,
            np,
            w4,
            rec["lo"][w4].astype(np.uint32),
            w6,
            rec["hi"][w6].astype(np.uint64),
            rec["lo"][w6].astype(np.uint64),
            np.flatnonzero(family == 0).tolist(),
        )
    mask6 = np.array(is6, dtype=bool)
    pairs = np.frombuffer(q6, dtype=">u8").reshape(-1, 2)
    return _finish(
        gf,
        state,
        items,
        np,
        np.flatnonzero(~mask6),
        np.frombuffer(q4, dtype=">u4").astype(np.uint32),
        np.flatnonzero(mask6),
        pairs[:, 0].astype(np.uint64),
        pairs[:, 1].astype(np.uint64),
        [],
    )


def _finish(
    gf: Geofence,
    state: _State,
    items: Sequence[Any],
    np: Any,
    w4: Any,
    v4: Any,
    w6: Any,
    h: Any,
    low: Any,
    slow: list[int],
) -> list[Decision]:
    """Search both families and gather the decisions (``w4``/``w6``: row numbers)."""
    c = state.compiled
    vids = np.zeros(len(items), dtype=np.int64)  # rows in ``slow`` are redone below
    if w4.size:
        vids[w4] = _search_sorted(
            np,
            np.frombuffer(c.v4_starts, dtype=np.uint32),
            np.frombuffer(c.v4_ids, dtype=np.int32),
            v4,
        )
    if w6.size:
        hi6 = np.frombuffer(c.v6_hi, dtype=np.uint64)
        lo6 = np.frombuffer(c.v6_lo, dtype=np.uint64)
        pos = _search_sorted(np, hi6, None, h)
        # The last start with this high half lies after the address: search the
        # low halves of the starts sharing it (rare; done exactly, one by one).
        for k in np.flatnonzero((lo6[pos] > low) & (hi6[pos] == h)).tolist():
            pos[k] = segment(c.partitions, 6, (int(h[k]) << 64) | int(low[k]))
        v6ids = np.frombuffer(c.v6_ids, dtype=np.int32)[pos]
        vids[w6] = v6ids
        tunnels = np.flatnonzero((v6ids >= _TUNNEL_LOW) & (v6ids <= _TUNNEL_HIGH))
        slow = slow + w6[tunnels].tolist()
    out: list[Decision] = _decisions(np, c.table, vids).tolist()
    for k in sorted(slow):  # in input order, so the first invalid address is the one raised
        out[k] = _decide_one(gf, state, items[k])
    return out


def _search_sorted(np: Any, starts: Any, ids: Any, queries: Any) -> Any:
    """Segment index (``ids is None``) or segment id of each query, in query order."""
    order = np.argsort(queries)  # stability is irrelevant: results are scattered back
    pos = np.searchsorted(starts, queries[order], side="right") - 1
    found = pos if ids is None else ids[pos]
    out = np.empty(len(queries), dtype=found.dtype)
    out[order] = found
    return out


def _decisions(np: Any, table: Sequence[Any], vids: Any) -> Any:
    """Object array of the decisions for ``vids`` (negative ids index from the end)."""
    objects = np.empty(len(table), dtype=object)
    objects[:] = table
    return objects[vids]


# -- errors="mark": a post-step around decide_many ----------------------------------------

#: The :attr:`~geofence.Decision.outcome` of an input that is not an address.
INVALID = "invalid"

#: Attempts at deciding a marked batch on one state (a reload may land between parts).
_MARK_ATTEMPTS = 3


def invalid_decision(state: _State, item: object) -> Decision:
    """The row ``decide_many(..., errors="mark")`` gives an input that is not an address.

    Its outcome is ``"invalid"`` with the reason ``invalid_address``; its action
    is the policy's ``on_unresolved`` (the data cannot answer for it), so a
    caller that enforces marked rows does what the policy says for
    unanswerable requests. ``address`` holds the input as text (at most 200
    characters), so reports can show it.
    """
    c = state.compiled
    action, route = c.policy.on_unresolved
    text = item if isinstance(item, str) else repr(item)
    return Decision(
        action=action,
        route=route,
        reasons=("invalid_address",),
        outcome=INVALID,
        snapshot_id=c.snapshot.snapshot_id,
        policy_id=c.policy.id,
        policy_digest=c.policy.digest,
        address=text[:200],
    )


def decide_many_marked(
    gf: Geofence, ips: Iterable[Any], *, version: int | None = None
) -> list[Decision]:
    """``decide_many`` with invalid inputs marked (:func:`invalid_decision`) instead of raised.

    The batch goes through :func:`decide_many` whole. Only when that raises is
    it split in halves, recursively, so a few bad items among many cost a
    few extra vector passes rather than a scalar loop; parts shorter than
    :data:`VECTOR_MIN` are decided item by item. If a reload lands while the
    parts are decided, the batch is decided again so that it reflects one state
    (after a few tries, with reloads held off by the engine's reload lock).
    """
    items: Any = ips if isinstance(ips, list) or hasattr(ips, "dtype") else list(ips)
    for _ in range(_MARK_ATTEMPTS):
        state = gf._state
        out = _marked(gf, state, items, version)
        if gf._state is state:
            return out
    with gf._lock:  # reloads keep coming: hold them off (reload takes this lock) for one pass
        return _marked(gf, gf._state, items, version)


def _marked(gf: Geofence, state: _State, items: Any, version: int | None) -> list[Decision]:
    try:
        return decide_many(gf, items, version=version)
    except InvalidAddressError:
        pass
    if len(items) <= VECTOR_MIN:
        return [_one_marked(gf, state, x, version) for x in items]
    mid = len(items) // 2
    return _marked(gf, state, items[:mid], version) + _marked(gf, state, items[mid:], version)


def _one_marked(gf: Geofence, state: _State, item: Any, version: int | None) -> Decision:
    try:
        value = item if version is None else parse_address(_int(item), version=version)
        return _decide_one(gf, state, value)
    except InvalidAddressError:
        return invalid_decision(state, item)


def _int(item: Any) -> Any:
    """A numpy integer as a Python ``int`` (anything else unchanged, for the parser to judge)."""
    return int(item) if hasattr(item, "dtype") and item.dtype.kind in "iu" else item
