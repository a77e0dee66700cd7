"""Requests per address on the vectorised path: summed in Arrow, folded into the tally once."""

from __future__ import annotations

import copy
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pa = pytest.importorskip("pyarrow")

from geofence.audit import AuditOptions, Auditor, counting  # noqa: E402
from geofence.audit.counting import _PendingAddresses  # noqa: E402
from geofence.audit.inputs import LogSource  # noqa: E402
from geofence.audit.tally import Tally  # noqa: E402
from geofence.decision import Decision  # noqa: E402
from geofence.engine import Geofence  # noqa: E402
from tests.strategies import LOG_CLIENTS  # noqa: E402

_ADDRESSES = [f"192.0.2.{k}" for k in range(12)]

#: One block: (address, requests) pairs, each address once (a block's dictionary).
_BLOCK = st.lists(
    st.tuples(st.sampled_from(_ADDRESSES), st.integers(1, 1000)),
    max_size=12,
    unique_by=lambda pair: pair[0],
)


@settings(max_examples=150, deadline=None)
@given(blocks=st.lists(_BLOCK, max_size=8), limit=st.integers(1, 30))
def test_sums_and_order_equal_adding_block_by_block(
    engine: Geofence, blocks: list[list[tuple[str, int]]], limit: int
) -> None:
    """Whenever the batches are summed, the tally gets the same counts, decisions and key order."""
    decisions = {a: engine.decide(a) for a in _ADDRESSES}
    pending = _PendingAddresses()
    pending._limit = limit  # sum whenever this many rows wait
    expected: Counter[str] = Counter()
    for block in blocks:
        texts = [a for a, _ in block]
        distinct = list({id(decisions[a]): decisions[a] for a in texts}.values())
        slot = [next(k for k, d in enumerate(distinct) if d is decisions[a]) for a in texts]
        pending.add(
            pa.array(texts, pa.large_string()),
            pa.array([n for _, n in block], pa.int64()),
            pa.array(slot, pa.int32()),
            distinct,
        )
        expected.update(dict(block))
    tally = Tally()
    pending.fold_into(tally)
    assert tally.requests == expected
    assert list(tally.requests) == list(expected)  # first appearance, as the per-line path
    assert all(tally.decision_of[a] is decisions[a] for a in expected)
    pending.fold_into(tally)  # nothing waits any more
    assert tally.requests == expected


def test_fold_adds_to_what_the_tally_has(engine: Geofence) -> None:
    """Folding adds to counts already in the tally (a source read line by line before)."""
    d: Decision = engine.decide("192.0.2.1")
    tally = Tally()
    tally.requests["192.0.2.1"] = 5
    tally.decision_of["192.0.2.1"] = d
    pending = _PendingAddresses()
    texts = pa.array(["192.0.2.2", "192.0.2.1"], pa.large_string())
    pending.add(texts, pa.array([1, 2], pa.int64()), pa.array([0, 0], pa.int32()), [d])
    pending.fold_into(tally)
    assert tally.requests == Counter({"192.0.2.1": 7, "192.0.2.2": 1})
    assert list(tally.requests) == ["192.0.2.1", "192.0.2.2"]


def test_summing_while_reading_keeps_the_summary(
    engine: Geofence, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log whose addresses outgrow the waiting bound many times audits as the per-line path does."""
    r = random.Random(3)
    path = tmp_path / "many.log"
    with path.open("w") as fh:
        for i in range(40_000):
            client = r.choice(LOG_CLIENTS) if i % 3 else f"198.51.{i % 250}.{i % 200 + 1}"
            fh.write(
                f"{client} - - [01/Mar/2026:10:{i // 60 % 60:02d}:{i % 60:02d} +0000] "
                f'"GET / HTTP/1.1" 200 1 "-" "a" "-"\n'
            )
    monkeypatch.setattr(counting, "_PENDING_ROWS", 500)
    summaries = []
    for vectorised in (True, False):
        auditor = Auditor(engine, AuditOptions(vectorised=vectorised, history=False))
        auditor.feed(LogSource(str(path), block_size=64 << 10))  # about 55 blocks
        summary = auditor.summary()
        for key in ("seconds", "lines_per_second"):
            del summary[key]
        summaries.append(summary)
    assert summaries[0] == summaries[1]
    assert summaries[0]["distinct_addresses"] > 1_000


@settings(max_examples=100, deadline=None)
@given(
    index=st.lists(st.one_of(st.none(), st.integers(0, 9)), max_size=60), extra=st.integers(0, 3)
)
def test_counts_of_a_dictionary_index(index: list[int | None], extra: int) -> None:
    """Occurrences of each value equal a Counter of the index (nulls left out, unused values 0)."""
    size = max([k for k in index if k is not None], default=-1) + 1 + extra
    found = counting._counts(pa.array(index, pa.int32()), size)
    assert found.type == pa.int64()
    seen = Counter(k for k in index if k is not None)
    assert found.to_pylist() == [seen[k] for k in range(size)]


def test_decisions_that_are_not_shared_are_folded_early(
    engine: Geofence, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine returning a new decision object per address makes the counter fold early."""
    from geofence.audit.columns import Columns
    from geofence.audit.counting import ColumnCounter
    from geofence.signals.proxy import TrustedProxies

    def fresh(texts: list[str], errors: str = "raise") -> list[Decision]:
        return [copy.copy(d) for d in Geofence.decide_many(engine, texts, errors=errors)]

    monkeypatch.setattr(counting, "_PENDING_DECISIONS", 3)
    monkeypatch.setattr(engine, "decide_many", fresh)
    tally = Tally()
    counter = ColumnCounter(engine, tally, TrustedProxies())
    folds: list[int] = []

    def flush() -> None:
        folds.append(counter._pending.decisions)
        ColumnCounter.flush(counter)

    monkeypatch.setattr(counter, "flush", flush)
    text, floats = pa.large_string(), pa.float64()
    for block in (_ADDRESSES[:6], _ADDRESSES[4:]):
        n = len(block)
        counter.count(
            "x",
            Columns(
                peer=pa.array(block, text),
                xff=pa.nulls(n, text),
                at=pa.nulls(n, floats),
                minute=pa.nulls(n, floats),
                user=pa.nulls(n, text),
            ),
        )
    assert folds == [6, 8]  # each block's new decisions passed the bound of three
    assert tally.requests == Counter(_ADDRESSES[:6]) + Counter(_ADDRESSES[4:])
    assert counter._pending.decisions == 0
