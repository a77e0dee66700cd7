"""The bounded cache shared by the request path (clear when full)."""

from __future__ import annotations

import threading

import pytest

from geofence._cache import BoundedCache


def test_put_clears_when_full_and_returns_the_value() -> None:
    """Never more than maxsize entries; put() returns what it stored."""
    cache: BoundedCache[int, str] = BoundedCache(3)
    for n in range(10):
        assert cache.put(n, str(n)) == str(n)
        assert 1 <= len(cache) <= 3
        assert cache.get(n) == str(n)  # the newest entry is always there
    with pytest.raises(ValueError, match="maxsize"):
        BoundedCache(0)


def test_shared_between_threads_stays_bounded() -> None:
    """Many threads putting and reading: no error, values right, bounded.

    Threads racing at the bound may each add one entry past it (the check and
    the store are two steps), so the bound is maxsize plus the threads.
    """
    cache: BoundedCache[int, int] = BoundedCache(64)
    wrong: list[int] = []

    def work(offset: int) -> None:
        for n in range(5000):
            key = (n * 7 + offset) % 500
            value = cache.get(key)
            if value is not None and value != key * 2:
                wrong.append(key)
            cache.put(key, key * 2)
            if len(cache) > 64 + 6:
                wrong.append(-1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong
