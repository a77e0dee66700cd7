"""Batch decisions (``Geofence.decide_many``): numpy-vectorised search where possible.

With numpy installed, a batch of 64 or more address strings is decided in four steps:

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
address) and the items that fail are marked. Whatever the vector path cannot
answer alone goes through the scalar path of the same state, so the result
always equals ``[gf.decide(ip) for ip in ips]``: the marked items (the scalar
parser raises the usual :class:`InvalidAddressError` for invalid ones), IPv6
addresses in a tunnel prefix (unwrapped and decided with the tunnel recorded),
and IPv6 addresses whose segment shares its high 64 bits with the next one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import compress, repeat
from operator import not_
from socket import AF_INET, AF_INET6, inet_pton
from typing import TYPE_CHECKING, Any

from geofence.addr import ParsedAddress, parse_address
from geofence.decision import Decision
from geofence.snapshot.partition import TUNNEL_BY_ID, segment

if TYPE_CHECKING:
    from geofence.engine import Geofence, _State

__all__ = ["decide_many"]

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
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is an optional extra
        np = None  # type: ignore[assignment]
    if np is not None and isinstance(ips, np.ndarray) and ips.dtype.kind in "iu":
        if version != 4:
            return [
                gf._decide_parsed(state, parse_address(int(x), version=version))
                for x in ips.tolist()
            ]
        if ips.size and (int(ips.min()) < 0 or int(ips.max()) > 0xFFFFFFFF):
            parse_address(
                int(ips.max()) if int(ips.max()) > 0xFFFFFFFF else int(ips.min()), version=4
            )
        c = state.compiled
        vids = _search_sorted(
            np,
            np.frombuffer(c.v4_starts, dtype=np.uint32),
            np.frombuffer(c.v4_ids, dtype=np.int32),
            ips.astype(np.uint32, copy=False),
        )
        return _decisions(np, c.table, vids).tolist()  # type: ignore[no-any-return]
    items = ips if isinstance(ips, list) else list(ips)
    if version is not None:
        return [gf._decide_parsed(state, parse_address(x, version=version)) for x in items]
    if np is not None and len(items) >= VECTOR_MIN:
        return _vector_strings(gf, state, items, np)
    return _scalar(gf, state, items)


def _scalar(gf: Geofence, state: _State, items: Sequence[Any]) -> list[Decision]:
    """The per-item loop for short batches: the state's fast path on each item."""
    decide = state.decide
    return [decide(ip) for ip in items]


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
