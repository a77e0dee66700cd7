"""Memory per subject of the history stores, with full histories.

Usage (from a checkout)::

    python benchmarks/bench_history_memory.py               # 2,000 subjects
    python benchmarks/bench_history_memory.py --smoke       # 300 subjects
    python benchmarks/bench_history_memory.py --subjects 10000

Each subject makes ``max_observations_per_subject`` (50) requests from scattered
addresses (seeded), so its history is full and about 25 egress entries exist per
subject. Figures:

* ``MemoryHistoryStore`` without a byte budget: ``tracemalloc`` growth per subject
  and the store's own charge (``memory_bytes``) per subject;
* the same traffic under the default 64 MiB budget: subjects kept and real memory;
* ``RedisHistoryStore``: growth of Redis ``used_memory`` per subject (subject lists
  and egress sorted sets), the figure behind the ``maxmemory`` recipe in
  ``docs/history.md``. Redis is ``GEOFENCE_TEST_REDIS_URL`` when set, else a
  throwaway ``redis-server`` on a free loopback port; without either the Redis
  row is skipped with a message.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.signals.traffic

from bench_signals import _delete_prefixes, redis_url

from geofence.signals.history import HistoryConfig
from geofence.signals.stores import MemoryHistoryStore, RedisHistoryStore
from tests.signals.traffic import history_traffic


def memory_store(subjects: int, per: int, budget: int | None) -> tuple[int, int, int]:
    """(traced bytes, charged bytes, subjects kept) for the in-process store."""
    gc.collect()
    tracemalloc.start()
    try:
        store = MemoryHistoryStore(
            max_subjects=10**9,
            max_egress=10**9,
            max_bytes=budget if budget is not None else 2**62,
        )
        base = tracemalloc.get_traced_memory()[0]
        for obs in history_traffic(subjects, per, seed=11):
            store.record(obs)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return traced, store.memory_bytes, store.subject_count


def redis_store(url: str, subjects: int, per: int) -> tuple[int, str]:
    """(used_memory growth in bytes, Redis version) for the Redis store."""
    import redis

    client = redis.Redis.from_url(url)
    prefix = f"bench-mem-{uuid.uuid4().hex[:8]}:"
    store = RedisHistoryStore(client, prefix=prefix)
    try:
        before = int(client.info("memory")["used_memory"])
        for obs in history_traffic(subjects, per, seed=11):
            view = store.record(obs)
            if view.degraded:
                raise RuntimeError("Redis answered degraded; the figure would be meaningless")
        after = int(client.info("memory")["used_memory"])
        version = str(client.info("server")["redis_version"])
    finally:
        _delete_prefixes(url, [prefix])
        client.close()
    return after - before, version


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print one line per store."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, help="subjects (default 2000; smoke 300)")
    parser.add_argument("--smoke", action="store_true", help="short run")
    args = parser.parse_args(argv)
    subjects = args.subjects or (300 if args.smoke else 2000)
    per = HistoryConfig().max_observations_per_subject
    print(f"{subjects} subjects x {per} observations each (full histories), seed 11")

    traced, charged, _ = memory_store(subjects, per, None)
    print(
        f"  memory store, no budget:  {traced / subjects / 1024:6.1f} KiB/subject traced, "
        f"{charged / subjects / 1024:6.1f} KiB/subject charged (ratio {traced / charged:.3f})"
    )
    budget = 64 * 2**20
    traced_b, charged_b, kept_b = memory_store(subjects, per, budget)
    print(
        f"  memory store, 64 MiB:     {kept_b} of {subjects} subjects kept, "
        f"{traced_b / 2**20:.1f} MiB traced, {charged_b / 2**20:.1f} MiB charged"
    )
    with redis_url() as (url, how):
        if url is None:
            print(f"  redis store: skipped ({how})")
        else:
            grown, version = redis_store(url, subjects, per)
            print(
                f"  redis store ({how}, Redis {version}): "
                f"{grown / subjects / 1024:6.1f} KiB/subject of used_memory"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
