"""read_ahead: items in order from a worker thread, errors passed on, the worker stopped early."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.audit.ahead import read_ahead
from geofence.audit.inputs import _has_longer


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(), max_size=50), st.integers(1, 4))
def test_items_in_order(items: list[int], depth: int) -> None:
    """Every item arrives once, in order, whatever the depth."""
    assert list(read_ahead(iter(items), depth)) == items


def test_runs_in_another_thread_and_bounds_the_queue() -> None:
    """The iterator runs in a worker thread, at most ``depth`` items ahead of the consumer."""
    produced: list[int] = []
    threads: set[int] = set()

    def numbers() -> Iterator[int]:
        for i in range(10):
            threads.add(threading.get_ident())
            produced.append(i)
            yield i

    taken = []
    for item in read_ahead(numbers(), depth=2):
        taken.append(item)
        # The worker may have produced the items in the queue and one in hand.
        assert len(produced) <= len(taken) + 3
    assert taken == list(range(10))
    assert threads
    assert threading.get_ident() not in threads


def test_error_is_raised_in_the_consumer_after_the_items_before_it() -> None:
    """An exception of the iterator reaches the consumer after the items produced before it."""

    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("disk gone")

    stream = read_ahead(failing())
    assert [next(stream), next(stream)] == [1, 2]
    with pytest.raises(OSError, match="disk gone"):
        next(stream)


def test_early_stop_closes_the_iterator_and_joins_the_worker() -> None:
    """Leaving the loop early stops the worker, closes the generator and leaves no thread."""
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    before = threading.active_count()
    stream = read_ahead(endless(), depth=1)
    for item in stream:
        if item == 5:
            break
    stream.close()
    assert closed.wait(5)
    assert threading.active_count() == before


def test_depth_must_be_positive() -> None:
    """A depth below 1 is refused with the value named."""
    with pytest.raises(ValueError, match="got 0"):
        list(read_ahead(iter([1]), depth=0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=30), st.integers(1, 30))
def test_has_longer_equals_the_longest_line(lengths: list[int], limit: int) -> None:
    """The stepping check agrees with measuring every line."""
    body = b"".join(b"x" * n + b"\n" for n in lengths)
    assert _has_longer(body, limit) == (max(lengths) > limit)


def test_a_worker_blocked_in_a_read_does_not_hold_the_consumer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stopping while the worker waits in a read (stdin after Ctrl-C) returns after the wait."""
    from geofence.audit import ahead

    monkeypatch.setattr(ahead, "_JOIN_WAIT", 0.2)
    release = threading.Event()

    def blocking() -> Iterator[int]:
        yield 1
        release.wait(30)  # a read that does not return
        yield 2

    stream = read_ahead(blocking())
    assert next(stream) == 1
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 5
    release.set()  # let the daemon thread end
