"""The in-memory history store is bounded in bytes, evicts fairly and charges honestly.

Before, only the number of subjects was bounded: 100,000 subjects with full
histories reached about 2 GB per process. ``max_bytes`` (64 MiB by default)
bounds the charged size of both tables together; the charge follows CPython's
object sizes, and ``tracemalloc`` confirms it within a few per cent.
"""

from __future__ import annotations

import gc
import sys
import threading
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.signals.history import HistoryConfig, Observation
from geofence.signals.stores import MemoryHistoryStore, _Costs
from tests.signals.traffic import history_traffic

UNBOUNDED = 10**9


def _recharged(store: MemoryHistoryStore) -> int:
    """The charge recomputed from scratch over what the store holds."""
    total = 0
    for key, subject in store._subjects.items():
        total += _Costs.SUBJECT + sys.getsizeof(key)
        total += sum(_Costs.observation(o) for o in subject.observations)
    for key, egress in store._egress.items():
        total += _Costs.EGRESS + sys.getsizeof(key) + _Costs.SEEN * len(egress.seen)
    return total


def test_default_budget_is_64_mib() -> None:
    """The documented default."""
    assert MemoryHistoryStore().max_bytes == 64 * 2**20


@pytest.mark.parametrize("budget", [0, -1, 1000, 2.5, True])
def test_budget_below_one_full_subject_is_refused(budget: object) -> None:
    """A budget that cannot hold one full history (or is not an integer) is a ValueError."""
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryHistoryStore(max_bytes=budget)  # type: ignore[arg-type]


def test_charge_stays_within_the_budget_and_matches_tracemalloc() -> None:
    """Under a small budget the charge never exceeds it, and real memory stays close."""
    budget = 2 * 2**20
    tracemalloc.start()
    try:
        store = MemoryHistoryStore(max_subjects=UNBOUNDED, max_egress=UNBOUNDED, max_bytes=budget)
        base = tracemalloc.get_traced_memory()[0]
        for obs in history_traffic(800, 20):
            store.record(obs)
            assert store.memory_bytes <= budget
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert store.subject_count < 800  # the budget evicted
    assert store.memory_bytes == _recharged(store)
    assert 0.85 * store.memory_bytes <= used <= 1.15 * budget


def test_least_recently_used_go_first_and_active_subjects_stay() -> None:
    """A flood of new subjects evicts the idlest entries, never one in active use."""
    cfg = HistoryConfig()
    budget = 200 * (_Costs.SUBJECT + cfg.max_observations_per_subject * 300)
    store = MemoryHistoryStore(max_subjects=UNBOUNDED, max_egress=UNBOUNDED, max_bytes=budget)
    flood = history_traffic(5000, 3, seed=1)
    active = Observation(subject="active", at=1.7e9, address="192.0.2.1")
    for k, obs in enumerate(flood):
        if k % 50 == 0:
            store.record(active)
        store.record(obs)
        assert store.memory_bytes <= budget
    assert "active" in store._subjects
    assert "user-00000000" not in store._subjects  # the first of the flood, idle since
    # Both tables share the budget: neither is drained to spare the other.
    assert store.subject_count > 10
    assert store.egress_count > 10


def test_capped_histories_are_charged_once() -> None:
    """Observations dropped by the per-subject cap are uncharged as they go."""
    cfg = HistoryConfig(max_observations_per_subject=5)
    store = MemoryHistoryStore(cfg, max_bytes=UNBOUNDED)
    for obs in history_traffic(3, 40):
        store.record(obs)
    assert all(len(s.observations) == 5 for s in store._subjects.values())
    assert store.memory_bytes == _recharged(store)
    store.close()
    assert store.memory_bytes == 0


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 8), st.floats(0, 5e6)),
        min_size=1,
        max_size=120,
    ),
    budget_subjects=st.integers(1, 12),
)
def test_charge_never_drifts(events: list[tuple[int, int, float]], budget_subjects: int) -> None:
    """The running charge always equals the charge recomputed from what is held.

    Whatever the order of subjects, addresses and clock jumps (TTL expiry included).
    """
    cfg = HistoryConfig(max_observations_per_subject=4, max_subjects_per_egress=3)
    clock = [0.0]
    budget = budget_subjects * (_Costs.SUBJECT + 4 * 400)
    store = MemoryHistoryStore(
        cfg, max_subjects=20, max_egress=20, max_bytes=budget, clock=lambda: clock[0]
    )
    for subject, address, advance in events:
        clock[0] += advance
        store.record(
            Observation(subject=f"s{subject}", at=1.7e9 + clock[0], address=f"10.0.0.{address}")
        )
        assert store.memory_bytes == _recharged(store)
        assert store.memory_bytes <= budget


def test_charge_is_consistent_under_threads() -> None:
    """Eight threads recording at once leave a charge equal to the recomputed one."""
    store = MemoryHistoryStore(max_subjects=UNBOUNDED, max_egress=UNBOUNDED, max_bytes=2 * 2**20)

    def work(seed: int) -> None:
        for obs in history_traffic(60, 10, seed=seed):
            store.record(
                Observation(subject=f"{seed}-{obs.subject}", at=obs.at, address=obs.address)
            )

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.memory_bytes == _recharged(store)
    assert store.memory_bytes <= 2 * 2**20
