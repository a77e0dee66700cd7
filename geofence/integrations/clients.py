"""Who the client is: the socket peer, or what trusted proxies say it is, cached.

Resolution (:func:`geofence.signals.proxy.resolve_client`) is a pure function
of the peer, the forwarding headers and the (immutable) trusted-proxy
settings, and costs more than a decision (it parses every hop); API clients
repeat the same peer and headers request after request, so results are cached.
"""

from __future__ import annotations

from collections.abc import Mapping

from geofence._cache import BoundedCache
from geofence.integrations.request import FORWARDING, HeaderSource
from geofence.signals.proxy import ClientAddress, TrustedProxies, resolve_client

__all__ = ["ClientResolver"]


class ClientResolver:
    """Resolve client addresses through a small cache.

    A client is admitted to the cache on its second request: the first only
    records the key's hash, an int the garbage collector never walks, so
    clients seen once leave no objects behind (a hash collision merely admits a
    key early: the cache compares whole keys). Keys whose forwarding headers are
    longer than ``key_max`` characters are resolved every time.

    Args:
        trusted: Who may speak for the client.
        size: Entries of the cache of resolved clients.
        seen: Entries of the set of hashes of clients seen once.
        key_max: Largest total length of forwarding header values cached.
    """

    __slots__ = ("_clients", "_key_max", "_seen", "_trusted", "cached")

    def __init__(
        self, trusted: TrustedProxies, *, size: int = 4096, seen: int = 16384, key_max: int = 512
    ) -> None:
        self._trusted = trusted
        self._clients: BoundedCache[tuple[object, ...], ClientAddress] = BoundedCache(size)
        self._seen: BoundedCache[int, bool] = BoundedCache(seen)
        self._key_max = key_max
        self.cached: BoundedCache[int, ClientAddress] = BoundedCache(size)
        """The clients admitted to the cache, by ``id()``: a caller that remembers
        something per client (the gate's verdicts) remembers it for these only."""

    def resolve(self, peer: str | None, headers: HeaderSource) -> ClientAddress:
        """The client address of a request with socket peer ``peer`` and ``headers``."""
        items = (
            headers
            if type(headers) is list
            else (headers.items() if isinstance(headers, Mapping) else headers)
        )
        # A loop, not a comprehension: no frame of its own per request.
        forwarding = []
        for name, value in items:
            if name.lower() in FORWARDING:
                forwarding.append((name, value))
        key = (peer, *forwarding)
        client = self._clients.get(key)
        if client is not None:
            return client
        client = resolve_client(peer, forwarding, self._trusted)
        digest = hash(key)
        if digest not in self._seen:
            self._seen.put(digest, True)  # first sight: only the hash is kept
        elif sum([len(value) for _, value in forwarding]) <= self._key_max:
            self._clients.put(key, client)
            self.cached.put(id(client), client)
        return client
