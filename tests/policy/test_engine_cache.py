"""The engine's per-address decision cache (pure-Python core): bounded, and transparent."""

from __future__ import annotations

from typing import Any

from geofence._cache import BoundedCache
from geofence.context import Context
from geofence.decision import Action, Decision
from geofence.engine import _Cached


def test_decision_cache_is_the_bounded_cache() -> None:
    """Hits skip the decide call, misses beyond the bound start the cache over.

    Context calls and non-string addresses always go to the engine.
    """
    calls: list[object] = []
    answers = {ip: Decision(action=Action.ALLOW, reasons=(ip,)) for ip in ("a", "b", "c")}

    def decide(ip: Any, context: Any = None) -> Decision:
        calls.append(ip)
        return answers[ip] if isinstance(ip, str) else answers["a"]

    cached = _Cached(decide, 2)
    assert isinstance(cached._cache, BoundedCache)
    assert cached("a") is answers["a"]
    assert cached("a") is answers["a"]
    assert calls == ["a"]  # the second call was a hit
    for ip in ("b", "c", "a", "b"):
        assert cached(ip) is answers[ip]
        assert 1 <= len(cached._cache) <= 2  # never larger than its bound
    cached(b"\x01\x02\x03\x04")
    cached("a", Context())
    assert calls[-2:] == [b"\x01\x02\x03\x04", "a"]
