"""History stores: where account history lives between requests.

Every store appends an :class:`~geofence.signals.history.Observation` and
answers with a :class:`~geofence.signals.history.HistoryView` in one call (one
network round trip for Redis). Stores:

- :class:`MemoryHistoryStore` (the default): in-process, thread-safe, bounded.
- :class:`RedisHistoryStore` / :class:`AsyncRedisHistoryStore`: shared by a
  fleet; never raise on a Redis failure, but return a degraded view and stop
  calling Redis for a short while (a circuit breaker).

``redis`` is an optional dependency (``pip install geofence[redis]``), imported
only when a Redis store is constructed. See ``docs/history.md`` for the key
layout, timeouts and failure modes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, Self, TypeVar

from geofence.signals.history import (
    FailureMode,
    HistoryConfig,
    HistoryView,
    Observation,
    decode_observations,
)

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    from redis.commands.core import AsyncScript, Script

__all__ = [
    "AsyncHistoryStore",
    "AsyncRedisHistoryStore",
    "HistoryStore",
    "MemoryHistoryStore",
    "RedisHistoryStore",
]

_log = logging.getLogger(__name__)

Clock = Callable[[], float]


class HistoryStore(Protocol):
    """A synchronous history store."""

    def record(self, obs: Observation) -> HistoryView:
        """Append ``obs`` and return the subject's history before it.

        Implementations never raise for a backend failure: they return a view with
        ``degraded=True``.
        """
        ...

    def close(self) -> None:
        """Release resources (connections the store opened itself)."""
        ...


class AsyncHistoryStore(Protocol):
    """An asynchronous history store (for ASGI servers)."""

    async def record(self, obs: Observation) -> HistoryView:
        """Append ``obs`` and return the subject's history before it (never raises)."""
        ...

    async def close(self) -> None:
        """Release resources (connections the store opened itself)."""
        ...


# --------------------------------------------------------------------------- memory


class _Entry:
    __slots__ = ("size", "touched")

    def __init__(self, touched: float, size: int) -> None:
        self.touched = touched  # clock reading of the last record, for TTL expiry
        self.size = size  # bytes this entry is charged, see _Costs


_E = TypeVar("_E", bound=_Entry)


class _Subject(_Entry):
    __slots__ = ("observations",)

    def __init__(self, maxlen: int, touched: float, size: int) -> None:
        super().__init__(touched, size)
        # Newest first: appendleft, and the deque's maxlen drops the oldest on the right.
        self.observations: deque[Observation] = deque(maxlen=maxlen)


class _Egress(_Entry):
    __slots__ = ("seen",)

    def __init__(self, touched: float, size: int) -> None:
        super().__init__(touched, size)
        # subject -> latest observation time, in record order (oldest first).
        self.seen: OrderedDict[str, float] = OrderedDict()


class _Costs:
    """Bytes charged per entry of the memory store: CPython object sizes, measured once.

    An entry costs its table slot, its container and key, and per item the
    objects it holds. Strings are charged at their own size (``sys.getsizeof``):
    each observation holds the subject and address strings of its own request;
    its country and subdivision are the snapshot records' strings, charged nothing.
    ``docs/history.md`` compares the charge with ``tracemalloc`` (the tests check
    that they stay close).
    """

    __slots__ = ()

    #: One slot of an OrderedDict table: hash table entry plus the order links.
    SLOT: Final = 104
    SUBJECT: Final = SLOT + sys.getsizeof(_Subject(50, 0.0, 0)) + sys.getsizeof(deque(maxlen=50))
    EGRESS: Final = SLOT + sys.getsizeof(_Egress(0.0, 0)) + sys.getsizeof(OrderedDict())
    #: An observation: the object, its float fields, and its share of the deque's blocks.
    OBSERVATION: Final = (
        sys.getsizeof(Observation(subject="s", at=0.5, address="a", latitude=0.5, longitude=0.5))
        + 3 * sys.getsizeof(0.5)
        + 8
    )
    #: One subject seen behind an egress address: a slot and its float time.
    SEEN: Final = SLOT + sys.getsizeof(0.5)

    @staticmethod
    def observation(obs: Observation) -> int:
        """An observation with its own subject and address strings (each request's copies)."""
        return _Costs.OBSERVATION + sys.getsizeof(obs.subject) + sys.getsizeof(obs.address)


class _ClosedOnExit:
    """``with store:`` closes the store on leaving the block."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MemoryHistoryStore(_ClosedOnExit):
    """In-process history store: the default for a single process.

    Thread-safe with one lock held only for dictionary updates. Memory is bounded:
    at most ``max_bytes`` charged in total (64 MiB by default; see
    ``docs/history.md`` for what is charged), ``max_subjects`` subjects and
    ``max_egress`` egress addresses, ``config.max_observations_per_subject`` per
    subject and ``config.max_subjects_per_egress`` per address. Over a bound, the
    least recently used entries go first, across both tables: no subject is kept
    or dropped for the size of its history, and a flood of new subjects evicts the
    idlest ones before any active one. A subject's history
    expires ``config.ttl_s`` after its last observation and an address's
    ``config.egress_window_s`` after its last one, measured on ``clock``: lazily
    when touched, and by a sweep of at most ``sweep_batch`` entries per call.

    Windows (hopping, egress counting) use the observations' own ``at`` times;
    egress entries are pruned in record order, so an observation that arrives out
    of time order may be counted a little longer than its window.

    Args:
        config: Bounds and windows; the defaults when ``None``.
        max_subjects: Most subjects kept.
        max_egress: Most egress addresses kept.
        max_bytes: Most bytes charged for both tables together.
        sweep_batch: Most expired entries dropped per call, per table.
        clock: Monotonic seconds used for expiry (injectable for tests).

    Raises:
        ValueError: A bound is smaller than 1 (``max_bytes``: than one full subject).
    """

    failure_mode: FailureMode = "open"
    """A memory store cannot fail; present for symmetry with the Redis stores."""

    def __init__(
        self,
        config: HistoryConfig | None = None,
        *,
        max_subjects: int = 100_000,
        max_egress: int = 100_000,
        max_bytes: int = 64 * 2**20,
        sweep_batch: int = 16,
        clock: Clock = time.monotonic,
    ) -> None:
        for name, value in (
            ("max_subjects", max_subjects),
            ("max_egress", max_egress),
            ("sweep_batch", sweep_batch),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value!r}")
        self.config = config if config is not None else HistoryConfig()
        smallest = _Costs.SUBJECT + self.config.max_observations_per_subject * _Costs.OBSERVATION
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < smallest:
            raise ValueError(
                f"max_bytes must be an integer of at least {smallest} (one full subject), "
                f"got {max_bytes!r}"
            )
        self.max_subjects = max_subjects
        self.max_egress = max_egress
        self.max_bytes = max_bytes
        self._bytes = 0
        self._sweep_batch = sweep_batch
        self._clock = clock
        self._lock = threading.Lock()
        # Both tables are in touch order (least recent first): LRU eviction and
        # TTL sweeps both work from the front.
        self._subjects: OrderedDict[str, _Subject] = OrderedDict()
        self._egress: OrderedDict[str, _Egress] = OrderedDict()

    @property
    def subject_count(self) -> int:
        """Subjects currently held (expired ones may linger until swept)."""
        return len(self._subjects)

    @property
    def egress_count(self) -> int:
        """Egress addresses currently held (expired ones may linger until swept)."""
        return len(self._egress)

    @property
    def memory_bytes(self) -> int:
        """Bytes currently charged (at most ``max_bytes`` between calls)."""
        return self._bytes

    def record(self, obs: Observation) -> HistoryView:
        """Append ``obs`` and return the subject's earlier history.

        Args:
            obs: The current request's observation.

        Returns:
            The view: earlier observations newest first (excluding ``obs``) and the
            number of distinct subjects behind ``obs.address`` within the window.
        """
        cfg = self.config
        cutoff = obs.at - cfg.egress_window_s
        obs_cost = _Costs.observation(obs)
        with self._lock:
            now = self._clock()
            subjects = self._subjects
            subject = subjects.get(obs.subject)
            if subject is None or now - subject.touched > cfg.ttl_s:
                fresh = _Subject(
                    cfg.max_observations_per_subject,
                    now,
                    _Costs.SUBJECT + sys.getsizeof(obs.subject),
                )
                self._bytes += fresh.size - (subject.size if subject is not None else 0)
                subject = subjects[obs.subject] = fresh
            else:
                subject.touched = now
            # Replacing an expired entry keeps its slot, so always move to the end.
            subjects.move_to_end(obs.subject)
            history = subject.observations
            earlier = tuple(history)
            if len(history) == history.maxlen:  # appendleft drops the oldest on the right
                dropped = _Costs.observation(history[-1])
                subject.size -= dropped
                self._bytes -= dropped
            history.appendleft(obs)
            subject.size += obs_cost
            self._bytes += obs_cost

            table = self._egress
            egress = table.get(obs.address)
            if egress is None or now - egress.touched > cfg.egress_window_s:
                renewed = _Egress(now, _Costs.EGRESS + sys.getsizeof(obs.address))
                self._bytes += renewed.size - (egress.size if egress is not None else 0)
                egress = table[obs.address] = renewed
            else:
                egress.touched = now
            table.move_to_end(obs.address)
            seen = egress.seen
            before = len(seen)
            seen[obs.subject] = max(obs.at, seen.get(obs.subject, obs.at))
            seen.move_to_end(obs.subject)
            while seen and next(iter(seen.values())) < cutoff:
                seen.popitem(last=False)
            while len(seen) > cfg.max_subjects_per_egress:
                seen.popitem(last=False)
            count = len(seen)
            # Subjects behind an address are charged at the slot size only: their
            # ids are the subjects table's own strings.
            change = (count - before) * _Costs.SEEN
            egress.size += change
            self._bytes += change

            self._trim(subjects, self.max_subjects, now, cfg.ttl_s)
            self._trim(table, self.max_egress, now, cfg.egress_window_s)
            self._fit(subjects, table)
        return HistoryView(observations=earlier, egress_subjects=count)

    def _trim(
        self,
        table: OrderedDict[str, _E],
        bound: int,
        now: float,
        ttl: float,
    ) -> None:
        """Evict beyond ``bound`` (LRU) and sweep a few expired entries."""
        while len(table) > bound:
            self._bytes -= table.popitem(last=False)[1].size
        for _ in range(self._sweep_batch):
            if not table:
                break
            oldest = next(iter(table.values()))
            if now - oldest.touched <= ttl:
                break
            self._bytes -= table.popitem(last=False)[1].size

    def _fit(self, subjects: OrderedDict[str, _Subject], egress: OrderedDict[str, _Egress]) -> None:
        """Evict least recently used entries, from either table, until within ``max_bytes``.

        Of the two tables' oldest entries the one touched longer ago goes first,
        so neither table is drained to spare the other.
        """
        tables: tuple[OrderedDict[str, Any], ...] = (subjects, egress)
        while self._bytes > self.max_bytes:
            # The entries of this very request are last in each table: never evict them.
            candidates = [t for t in tables if len(t) > 1]
            if not candidates:
                break
            table = min(candidates, key=lambda t: next(iter(t.values())).touched)
            self._bytes -= table.popitem(last=False)[1].size

    def close(self) -> None:
        """Forget all history."""
        with self._lock:
            self._subjects.clear()
            self._egress.clear()
            self._bytes = 0


# --------------------------------------------------------------------------- redis

# One round trip per observation. KEYS: subject list, egress sorted set.
# ARGV: 1 payload, 2 max observations, 3 subject TTL (s), 4 egress member,
#       5 score (observation time), 6 window cutoff, 7 egress TTL (s), 8 max members.
# The earlier history is read before the push, so the reply excludes the current
# observation. ZADD GT (Redis >= 6.2) keeps a member's latest time when
# observations arrive out of order.
_RECORD_LUA = """
local previous = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], 'GT', ARGV[5], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6])
local cap = tonumber(ARGV[8])
local count = redis.call('ZCARD', KEYS[2])
if count > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, count - cap - 1)
  count = cap
end
redis.call('EXPIRE', KEYS[2], ARGV[7])
return {previous, count}
"""

_FAILURE_MODES = ("open", "closed")


def _digest(text: str) -> str:
    """Fixed-length key component: no separator, glob or length tricks get through."""
    raw = text.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


_C = TypeVar("_C")  # the Redis client (sync or asyncio)
_S = TypeVar("_S")  # the registered script of that client


class _RedisCommon(Generic[_C, _S]):
    """Constructor, key layout, script arguments, reply parsing and the circuit breaker.

    Subclasses say how to make a client from a URL (:meth:`_connect`) and how
    to register the script with it (:meth:`_register`).
    """

    def __init__(
        self,
        client: _C | str,
        *,
        config: HistoryConfig | None = None,
        prefix: str = "geofence:",
        failure_mode: FailureMode = "open",
        socket_connect_timeout: float = 0.05,
        socket_timeout: float = 0.1,
        retry_after_s: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_mode not in _FAILURE_MODES:
            raise ValueError(f"failure_mode must be 'open' or 'closed', got {failure_mode!r}")
        if not (math.isfinite(retry_after_s) and retry_after_s >= 0):
            raise ValueError(f"retry_after_s must be >= 0, got {retry_after_s!r}")
        self.config = config if config is not None else HistoryConfig()
        self.prefix = prefix
        self.failure_mode: FailureMode = failure_mode
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._open_until = -math.inf
        self._last_error = ""
        cfg = self.config
        # Arguments that never change, formatted once.
        self._max_obs = str(cfg.max_observations_per_subject)
        self._ttl = str(max(1, math.ceil(cfg.ttl_s)))
        self._egress_ttl = str(max(1, math.ceil(cfg.egress_window_s)))
        self._cap = str(cfg.max_subjects_per_egress)
        self._client: _C
        if isinstance(client, str):
            self._client = self._connect(client, socket_connect_timeout, socket_timeout)
            self._owns_client = True
        else:
            self._client = client
            self._owns_client = False
        self._script: _S = self._register(self._client)

    @staticmethod
    def _connect(url: str, connect_timeout: float, timeout: float) -> _C:
        raise NotImplementedError

    @staticmethod
    def _register(client: _C) -> _S:
        raise NotImplementedError

    @property
    def client(self) -> _C:
        """The Redis client in use."""
        return self._client

    def subject_key(self, subject: str) -> str:
        """The Redis list holding ``subject``'s observations (newest first)."""
        return f"{self.prefix}subj:{_digest(subject)}"

    def egress_key(self, address: str) -> str:
        """The Redis sorted set of subjects (score = last time) behind ``address``."""
        return f"{self.prefix}egress:{_digest(address)}"

    @property
    def circuit_open(self) -> bool:
        """Whether Redis is being skipped after a recent failure."""
        return self._clock() < self._open_until

    @property
    def last_error(self) -> str:
        """Description of the most recent failure ("" after a success)."""
        return self._last_error

    def _command(self, obs: Observation) -> tuple[list[str], list[str | bytes]]:
        keys = [self.subject_key(obs.subject), self.egress_key(obs.address)]
        args: list[str | bytes] = [
            obs.to_bytes(),
            self._max_obs,
            self._ttl,
            _digest(obs.subject),
            repr(obs.at),
            repr(obs.at - self.config.egress_window_s),
            self._egress_ttl,
            self._cap,
        ]
        return keys, args

    def _skipped(self) -> HistoryView | None:
        if self._clock() < self._open_until:
            return HistoryView.unavailable(
                f"skipping Redis after a failure: {self._last_error}", self.failure_mode
            )
        return None

    def _view(self, reply: object) -> HistoryView:
        if not (isinstance(reply, list | tuple) and len(reply) == 2):
            raise TypeError(f"unexpected reply from the history script: {reply!r:.80}")
        items, count = reply
        if not isinstance(items, list | tuple) or not isinstance(count, int):
            raise TypeError(f"unexpected reply from the history script: {reply!r:.80}")
        self._open_until = -math.inf
        self._last_error = ""
        return HistoryView(
            observations=decode_observations(items),
            egress_subjects=count,
            failure_mode=self.failure_mode,
        )

    def _failed(self, exc: Exception) -> HistoryView:
        error = f"{type(exc).__name__}: {exc}"
        self._last_error = error
        self._open_until = self._clock() + self.retry_after_s
        _log.warning(
            "history store unavailable (failing %s, retry in %.3g s): %s",
            self.failure_mode,
            self.retry_after_s,
            error,
        )
        return HistoryView.unavailable(error, self.failure_mode)


# redis is an optional dependency: imported only when a store is built from a URL.
# No client-side retries: the circuit breaker decides when to try again.


def _sync_client(url: str, connect_timeout: float, timeout: float) -> redis.Redis:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _async_client(url: str, connect_timeout: float, timeout: float) -> redis.asyncio.Redis:
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return redis.asyncio.Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


class RedisHistoryStore(_RedisCommon["redis.Redis", "Script"], _ClosedOnExit):
    """History in Redis, shared by a fleet (synchronous client).

    Each :meth:`record` is one EVALSHA of a Lua script (see ``docs/history.md``),
    so it costs one round trip and is atomic. Any failure (connection refused,
    timeout, script error, bad reply) yields a degraded view instead of an
    exception, and Redis is then skipped for ``retry_after_s`` so that a down
    Redis costs no timeout per request.

    Args:
        client: A ``redis.Redis`` client, or a URL (``redis://host:6379/0``) from
            which one is made with the timeouts below and no retries. A client you
            pass keeps its own timeouts and is not closed by :meth:`close`.
        config: Bounds and windows; the defaults when ``None``.
        prefix: Namespace of every key (``"{geofence}:"`` puts all keys in one
            Redis Cluster slot).
        failure_mode: ``"open"`` (no history signals on failure) or ``"closed"``
            (``history_unavailable``).
        socket_connect_timeout: Connect timeout in seconds (URL only).
        socket_timeout: Per-command timeout in seconds (URL only).
        retry_after_s: How long to skip Redis after a failure (0 = never skip).
        clock: Monotonic seconds for the circuit breaker (injectable for tests).

    Raises:
        ValueError: A bad ``failure_mode`` or ``retry_after_s``, or a bad URL.
        ImportError: ``redis`` is not installed.
    """

    _connect = staticmethod(_sync_client)

    @staticmethod
    def _register(client: redis.Redis) -> Script:
        return client.register_script(_RECORD_LUA)

    def record(self, obs: Observation) -> HistoryView:
        """Append ``obs`` and return the subject's earlier history (never raises).

        Args:
            obs: The current request's observation.

        Returns:
            The view, or a degraded view if Redis failed or is being skipped.
        """
        skipped = self._skipped()
        if skipped is not None:
            return skipped
        try:
            keys, args = self._command(obs)
            return self._view(self._script(keys=keys, args=args))
        except Exception as exc:  # a store failure must never fail the request
            return self._failed(exc)

    def close(self) -> None:
        """Close the client if this store created it."""
        if self._owns_client:
            self._client.close()


class AsyncRedisHistoryStore(_RedisCommon["redis.asyncio.Redis", "AsyncScript"]):
    """History in Redis for asyncio servers (``redis.asyncio`` client).

    Same script, key layout, failure handling and arguments as
    :class:`RedisHistoryStore`; ``client`` is a ``redis.asyncio.Redis`` or a URL.

    Raises:
        ValueError: A bad ``failure_mode`` or ``retry_after_s``, or a bad URL.
        ImportError: ``redis`` is not installed.
    """

    _connect = staticmethod(_async_client)

    @staticmethod
    def _register(client: redis.asyncio.Redis) -> AsyncScript:
        return client.register_script(_RECORD_LUA)

    async def record(self, obs: Observation) -> HistoryView:
        """Append ``obs`` and return the subject's earlier history (never raises).

        Cancellation (``asyncio.CancelledError``) still propagates.

        Args:
            obs: The current request's observation.

        Returns:
            The view, or a degraded view if Redis failed or is being skipped.
        """
        skipped = self._skipped()
        if skipped is not None:
            return skipped
        try:
            keys, args = self._command(obs)
            return self._view(await self._script(keys=keys, args=args))
        except Exception as exc:  # a store failure must never fail the request
            return self._failed(exc)

    async def close(self) -> None:
        """Close the client if this store created it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
