"""One bounded cache for the request path: a dict that starts over when full.

The engine, the client resolution and the integrations remember small results
(parsed peers, resolved clients, audit line templates) between requests. Each
needs a bound, and all want the same one: when the cache is full, clear it and
start over. Clearing is O(1) and atomic under the GIL, so threads may share the
cache without a lock; evicting entries one by one (LRU, FIFO) makes every miss
walk the dict's deleted slots and costs more than it saves at these sizes.

Reads are plain ``dict`` operations (``cache.get(key)``, ``key in cache``), so a
hit costs what a dict lookup costs; only :meth:`BoundedCache.put` is Python code,
and it runs on misses.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(dict[K, V]):
    """A ``dict`` of at most ``maxsize`` entries, cleared whenever it is full.

    Threads racing at the bound may each add one entry past it (checking the
    size and storing are two steps); no lock is taken for so small a slack.

    Args:
        maxsize: The most entries kept (at least 1).

    Raises:
        ValueError: ``maxsize`` is below 1.
    """

    __slots__ = ("maxsize",)

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize

    def put(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` (clearing the cache first if it is full).

        Returns:
            ``value``, so a miss reads ``return cache.put(key, compute())``.
        """
        if len(self) >= self.maxsize:
            self.clear()
        self[key] = value
        return value
