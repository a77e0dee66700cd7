"""The process-wide audit queue and its listener thread.

Writers put tuples whose first item is the function that writes them (see
:meth:`geofence.integrations.audit.AuditLogger.record`); a
``logging.handlers.QueueListener`` thread calls it. Started on the first item;
after a fork the child starts its own (the parent's thread does not exist
there); stopped and drained at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from logging.handlers import QueueListener
from queue import Empty, SimpleQueue
from typing import Any

__all__ = ["LINGER", "QUEUE", "Pending", "flush_audit_queue", "put"]

log = logging.getLogger("geofence")


class _Flush:
    """A marker put on the queue: set once every record before it is handled."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


#: Seconds the listener waits after waking, so that one wake-up serves many records.
LINGER = 0.05


#: What is queued: a tuple whose first item is the function that writes it.
Pending = tuple[Any, ...]


class _Listener(QueueListener):
    """Hands each record to its logger's handlers (``Logger.handle``) on its thread.

    Waking a thread per record made every audited request hand the GIL to the
    listener and back (with the machine's scheduler in between): under load
    the server's throughput collapsed. Once woken, the listener sleeps
    :data:`LINGER` seconds (the GIL released) and then handles what has
    gathered in one go, so hand-offs happen a few times a second, not per record.
    """

    # Any: the queue holds pending lines, flush markers and the stop sentinel.
    def __init__(self, queue: SimpleQueue[Any]) -> None:
        super().__init__(queue)
        self._records = queue

    def dequeue(self, block: bool) -> Any:
        try:
            return self._records.get_nowait()  # a batch is being handled: no wait
        except Empty:
            if not block:
                raise
        record = self._records.get()  # idle: block until one arrives
        time.sleep(LINGER)
        return record

    def handle(self, record: Any) -> None:
        if isinstance(record, _Flush):
            record.done.set()
            return
        try:
            record[0](record)  # the writer, given its whole tuple
        except Exception:  # pragma: no cover - handlers report their own errors
            log.exception("geofence: audit record could not be handled")


class _AuditQueue:
    """The process-wide queue of audit records and its listener thread.

    Started on the first record; after a fork the child starts its own (the
    parent's thread does not exist there); stopped and drained at exit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._listener: _Listener | None = None
        self.put: Callable[[Pending], None] = self._start_and_put

    def _start_and_put(self, record: Pending) -> None:
        with self._lock:
            if self._listener is None:
                self._listener = _Listener(self._queue)
                self._listener.start()
                atexit.register(self.stop)
                self.put = self._queue.put_nowait
        self._queue.put_nowait(record)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued so far has been handled.

        Returns:
            ``False`` if that took longer than ``timeout`` seconds.
        """
        if self._listener is None:
            return True
        marker = _Flush()
        self._queue.put_nowait(marker)
        return marker.done.wait(timeout)

    def stop(self) -> None:
        """Handle what is queued, then stop the listener thread."""
        with self._lock:
            listener, self._listener = self._listener, None
            self.put = self._start_and_put
        if listener is not None:
            listener.stop()

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's listener (its thread is gone)."""
        self._lock = threading.Lock()
        self._queue = SimpleQueue()
        self._listener = None
        self.put = self._start_and_put


#: The process-wide queue (``QUEUE.put(item)`` queues one item).
QUEUE = _AuditQueue()
os.register_at_fork(after_in_child=QUEUE.reset_after_fork)


def flush_audit_queue(timeout: float = 5.0) -> bool:
    """Wait until every queued audit record has been written (tests, shutdown hooks).

    Returns:
        ``False`` if that took longer than ``timeout`` seconds.
    """
    return QUEUE.flush(timeout)


def put(item: Pending) -> None:
    """Queue ``item`` (its first element writes it, on the listener thread)."""
    QUEUE.put(item)
