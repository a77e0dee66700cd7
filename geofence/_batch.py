"""Batch decisions (``Geofence.decide_many``): numpy-vectorised search where possible."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from socket import AF_INET, inet_pton
from typing import TYPE_CHECKING, Any

from geofence.addr import parse_address
from geofence.decision import Decision

if TYPE_CHECKING:
    from geofence.engine import Geofence

__all__ = ["decide_many"]


def decide_many(gf: Geofence, ips: Iterable[Any], *, version: int | None = None) -> list[Decision]:
    """See :meth:`geofence.Geofence.decide_many`."""
    # One state for the whole batch: a reload during it must not mix old and new.
    starts, ids, index, table, _cache, state = gf._hot
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is an optional extra
        np = None  # type: ignore[assignment]
    if np is not None and isinstance(ips, np.ndarray) and ips.dtype.kind in "iu":
        if version != 4:
            return [gf.decide(parse_address(int(x), version=version)) for x in ips.tolist()]
        if ips.size and (int(ips.min()) < 0 or int(ips.max()) > 0xFFFFFFFF):
            parse_address(
                int(ips.max()) if int(ips.max()) > 0xFFFFFFFF else int(ips.min()), version=4
            )
        s = np.frombuffer(starts, dtype=np.uint32)
        i = np.frombuffer(ids, dtype=np.int32)
        pos = np.searchsorted(s, ips.astype(np.uint32, copy=False), side="right") - 1
        vids = i[pos].tolist()
        return [table[v] for v in vids]  # type: ignore[misc,unused-ignore]
    items = list(ips)
    if version is not None:
        return [gf.decide(parse_address(x, version=version)) for x in items]
    # Parse IPv4 strings in one pass; everything else goes through decide().
    values: list[int] = []
    where: list[int] = []
    out: list[Decision | None] = [None] * len(items)
    from_bytes = int.from_bytes
    v6 = gf._decide_v6
    for k, ip in enumerate(items):
        if type(ip) is str:
            if ":" in ip:  # IPv6 text: skip the failing IPv4 parse
                out[k] = v6(state, ip)
                continue
            try:
                values.append(from_bytes(inet_pton(AF_INET, ip), "big"))
                where.append(k)
                continue
            except (OSError, ValueError, UnicodeEncodeError):
                pass
        out[k] = gf.decide(ip)
    if values:
        if np is not None and len(values) > 64:
            s = np.frombuffer(starts, dtype=np.uint32)
            i = np.frombuffer(ids, dtype=np.int32)
            pos = np.searchsorted(s, np.array(values, dtype=np.uint32), side="right") - 1
            for k, v in zip(where, i[pos].tolist(), strict=True):
                out[k] = table[v]
        else:
            for k, v in zip(where, values, strict=True):
                p = v >> 16
                out[k] = table[ids[bisect_right(starts, v, index[p], index[p + 1] + 1) - 1]]
    return out  # type: ignore[return-value]
