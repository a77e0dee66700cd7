"""decide_many over every batch form equals deciding one by one (whichever core is active)."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.engine import Geofence
from geofence.errors import InvalidAddressError
from geofence.snapshot.search import ACTIVE
from tests.strategies import address_texts, addresses

np = pytest.importorskip("numpy")


@pytest.fixture(scope="module")
def gf() -> Iterator[Geofence]:
    with Geofence(None, "us-ofac-comprehensive") as engine:
        yield engine


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as exc:
        return "raised", (type(exc), str(exc))


def _one_by_one(gf: Geofence, items: list[Any]) -> tuple[str, Any]:
    return _outcome(lambda: [gf.decide(x) for x in items])


def _text(version: int, value: int) -> str:
    return str(ipaddress.IPv6Address(value) if version == 6 else ipaddress.IPv4Address(value))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(address_texts(), max_size=150))
def test_strings_in_every_container(gf: Geofence, items: list[str]) -> None:
    want = _one_by_one(gf, items)
    assert _outcome(gf.decide_many, items) == want
    assert _outcome(gf.decide_many, tuple(items)) == want
    assert _outcome(gf.decide_many, iter(items)) == want


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), max_size=300))
def test_numpy_uint32(gf: Geofence, values: list[int]) -> None:
    arr = np.array(values, dtype=np.uint32)
    want = [gf.decide(str(ipaddress.IPv4Address(v))) for v in values]
    assert gf.decide_many(arr, version=4) == want
    assert gf.decide_many(arr.astype(np.int64), version=4) == want
    assert gf.decide_many(arr[::2], version=4) == want[::2]  # a strided view


def test_numpy_ipv4_out_of_range_is_refused(gf: Geofence) -> None:
    with pytest.raises(InvalidAddressError, match="out of range"):
        gf.decide_many(np.array([1, 2**32], dtype=np.int64), version=4)
    with pytest.raises(InvalidAddressError, match="out of range"):
        gf.decide_many(np.array([-1, 5], dtype=np.int64), version=4)


@settings(max_examples=60, deadline=None)
@given(st.lists(addresses().filter(lambda a: a[0] == 6), max_size=200))
def test_numpy_ipv6_halves_and_packed(gf: Geofence, picked: list[tuple[int, int]]) -> None:
    """(n, 2) uint64 halves and 16-byte items; tunnel prefixes unwrapped like text."""
    values = [v for _, v in picked]
    halves = np.array([(v >> 64, v & (2**64 - 1)) for v in values], dtype=np.uint64).reshape(-1, 2)
    packed = np.array([v.to_bytes(16, "big") for v in values], dtype="S16")
    want = [gf.decide(_text(6, v)) for v in values]
    assert gf.decide_many(halves, version=6) == want
    assert gf.decide_many(halves) == want
    assert gf.decide_many(packed) == want


def test_ipv6_tunnel_prefixes_in_arrays_record_the_tunnel(gf: Geofence) -> None:
    mapped = (0xFFFF << 32) | int(ipaddress.IPv4Address("5.61.16.1"))
    halves = np.array([[mapped >> 64, mapped & (2**64 - 1)]], dtype=np.uint64)
    (d,) = gf.decide_many(halves)
    assert d.tunnel == "ipv4_mapped"
    assert d == gf.decide("::ffff:5.61.16.1")


def test_arrow_string_arrays(gf: Geofence) -> None:
    pa = pytest.importorskip("pyarrow")
    items = ["8.8.8.8", "2a00:1450:4001::1", "::ffff:5.61.16.1", "fe80::1%eth0", "5.61.16.1"] * 30
    want = [gf.decide(x) for x in items]
    arr = pa.array(items, type=pa.string())
    assert gf.decide_many(arr) == want
    assert gf.decide_many(pa.array(items, type=pa.large_string())) == want
    assert gf.decide_many(arr.slice(7, 50)) == want[7:57]
    chunked = pa.chunked_array([items[:40], items[40:]], type=pa.string())
    assert gf.decide_many(chunked) == want
    assert gf.decide_many(pa.array([], type=pa.string())) == []


def test_arrow_nulls_and_invalid_items_raise_like_one_by_one(gf: Geofence) -> None:
    pa = pytest.importorskip("pyarrow")
    for items in (
        ["8.8.8.8", None, "1.1.1.1"],
        ["8.8.8.8", "01.2.3.4", None],
        ["\u0661.\u0662.\u0663.\u0664"],
    ):
        got = _outcome(gf.decide_many, pa.array(items, type=pa.string()))
        assert got == _one_by_one(gf, items)
        assert got[0] == "raised"


def test_concurrent_batches_and_reloads(gf: Geofence) -> None:
    """Threads deciding batches while another reloads: every batch is one consistent state."""
    items = [_text(4, (k * 2654435761) % 2**32) for k in range(2000)]
    items += [_text(6, ((k * 0x9E3779B97F4A7C15) << 64) % 2**128) for k in range(500)]
    want = gf.decide_many(items)
    errors: list[BaseException] = []
    stop = threading.Event()

    def work() -> None:
        try:
            while not stop.is_set():
                assert gf.decide_many(items) == want
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(3):
        gf.reload(policy="us-ofac-comprehensive")
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors


def test_core_info_names_the_active_core() -> None:
    import geofence

    info = geofence.core_info()
    assert info["core"] == ACTIVE
    assert info["reason"]


def test_many_reads_a_list_in_place_and_refuses_one_that_changes_size(gf: Geofence) -> None:
    """A list is read in place, chunk by chunk, and a list changing size is refused.

    The compiled many() holds each chunk's items, not a copy of the list: a fallback
    that shrinks the list between two chunks gets a RuntimeError, never a bad read.
    """
    c = gf.compiled
    items = ["8.8.8.8"] * 600 + ["fe80::1%eth0"] + ["8.8.8.8"] * 600  # one zone id: fallback

    def fallback(ip: Any, context: Any = None) -> Any:
        del items[700:]
        return None

    lookup = gf._state.lookup
    want = gf.decide("8.8.8.8")
    assert lookup.many(items[:1200]) == [want] * 600 + [gf.decide("fe80::1%eth0")] + [want] * 599
    if ACTIVE != "compiled":
        return
    from geofence.snapshot.search import make_lookup

    shrinking = make_lookup(c.partitions, c.table, fallback)
    with pytest.raises(RuntimeError, match="changed size"):
        shrinking.many(items)
