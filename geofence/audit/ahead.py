"""Producing the next items of an iterator in a thread while the caller works on the current one.

The vectorised audit reads, decompresses and parses block ``k + 1`` (file
reads, zlib and Arrow kernels, which release the GIL) while it decides and
counts block ``k``, so two cores share the work. At most ``depth`` items wait
in between, which bounds the memory to a few blocks.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Generic, TypeVar

__all__ = ["read_ahead"]

T = TypeVar("T")

_POLL = 0.1  # seconds between checks of a stop request while the queue is full
#: Seconds the consumer waits for a stopped worker. A worker blocked in a read (stdin
#: after Ctrl-C) is left to end on its own: it is a daemon thread and holds no lock.
_JOIN_WAIT = 5.0


class _End(Generic[T]):
    """The producer's last message: the iterator ended, or raised ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


def read_ahead(items: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """Yield the items of ``items``, produced in a worker thread up to ``depth`` ahead.

    Exceptions raised by ``items`` are raised here, in order. Closing the
    returned generator early (``break``, an exception in the caller) stops the
    worker after its current item and joins it (waiting a few seconds at most).

    Args:
        items: The iterator to run in the worker thread (it must not share
            unsynchronised state with the caller while it runs).
        depth: Items produced and not yet taken, at most (``>= 1``).

    Raises:
        ValueError: ``depth`` is less than 1.
    """
    if depth < 1:
        raise ValueError(f"read-ahead depth must be at least 1, got {depth}")
    handoff: queue.Queue[T | _End[T]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: T | _End[T]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()  # a generator's cleanup (an open file) runs now
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put(_End(exc))
            return
        put(_End(None))

    worker = threading.Thread(target=produce, name="geofence-audit-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        worker.join(_JOIN_WAIT)
