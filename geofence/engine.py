"""The Geofence engine: (snapshot, compiled policy) as one immutable state.

``decide`` on the request path does parse + bisect + index and returns a shared,
precomputed :class:`~geofence.decision.Decision`; it takes no lock. ``reload``
builds a complete new state first and swaps it in with one assignment, so a
request sees the old state or the new one, never a mix; a failed reload leaves
the old state in place.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from geofence._cache import BoundedCache
from geofence.addr import ParsedAddress, TunnelKind, parse_address
from geofence.context import Context
from geofence.decision import Action, Decision, Verdict
from geofence.errors import GeofenceError
from geofence.policy.compile import CompiledPolicy, compile_policy, make_decision
from geofence.policy.evaluate import evaluate
from geofence.policy.model import Policy
from geofence.policy.parse import load_policy
from geofence.reloading import Health, ReloadEvent, ReloadMonitor, Retry, Watcher
from geofence.signals.base import Signal
from geofence.snapshot.freshness import DEFAULT_MAX_AGE, Default, resolve_max_age, warn_if_stale
from geofence.snapshot.partition import SPECIAL_BY_ID, TUNNEL_BY_ID
from geofence.snapshot.reader import Snapshot
from geofence.snapshot.search import PyLookup, make_lookup

__all__ = ["Geofence", "SignalProvider"]

log = logging.getLogger("geofence")

#: A callable that computes workaround signals for a request with context:
#: ``(address, record, context, ip_only_decision) -> (signals, degraded)``; see
#: :class:`geofence.signals.pipeline.SignalPipeline`.
SignalProvider = Callable[[ParsedAddress, Any, Context, Decision], tuple[Sequence[Signal], bool]]


def _unset(ip: Any, context: Context | None = None) -> Decision:  # pragma: no cover - replaced
    raise RuntimeError("engine state used before it was built")


@dataclass(frozen=True, slots=True, kw_only=True)
class _State:
    """Everything one decision reads, swapped in by one assignment on reload.

    ``decide`` is the fast path (:mod:`geofence.snapshot.search`): a plain address string
    without context is answered from the compiled table, anything else goes to
    the engine's general path bound to this same state, so a request never
    mixes two states.
    """

    compiled: CompiledPolicy
    tunnel_variants: dict[tuple[int, TunnelKind], Decision]
    snapshot_path: str | None
    policy_ref: str | None
    snapshot_signature: tuple[int, int, int] | None = None
    needs_context: bool = False
    lookup: Any = None
    """The fast path over this state's compiled table (compiled core or twin); set once,
    by :meth:`Geofence._build`. Its batch methods serve ``decide_many``."""
    decide: Callable[..., Decision] = _unset
    """``decide(ip, context=None)``: ``lookup``, with the per-address cache in front of
    it when the pure-Python core has one; set once, by :meth:`Geofence._build`."""
    verdict: Any = None
    """``verdict(ip, context=None)``: the fast path over the compiled policy's verdict
    partitions (the same search, a far smaller table); set once, by :meth:`Geofence._build`."""


class _Cached:
    """A decide callable with a per-address cache in front (the pure-Python core only).

    The compiled core parses and searches in about the time of the dict lookup,
    so ``cache_size`` has no effect with it (see :func:`geofence.core_info`).
    """

    __slots__ = ("_cache", "_decide")

    def __init__(self, decide: Callable[..., Decision], size: int) -> None:
        self._decide = decide
        self._cache: BoundedCache[str, Decision] = BoundedCache(size)

    def __call__(self, ip: Any, context: Context | None = None) -> Decision:
        if context is not None or type(ip) is not str:
            return self._decide(ip, context)
        hit = self._cache.get(ip)
        if hit is None:
            hit = self._cache.put(ip, self._decide(ip))
        return hit


def _file_signature(path: str | None) -> tuple[int, int, int] | None:
    """(mtime_ns, size, inode) of a file, or None when it cannot be read."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class Geofence:
    """Decide requests against a policy and a snapshot.

    Args:
        snapshot: A :class:`~geofence.Snapshot`, a path to a snapshot file, or
            ``None`` for the bundled default data.
        policy: A :class:`~geofence.policy.Policy`, a path to a TOML file, or a
            preset name. Without one the ``allow-all`` policy applies, with a
            logged warning and a note in :meth:`explain`.
        cache_size: Size of the per-address decision cache of the pure-Python
            core (0 disables it). Hits skip parsing and search; it is cleared on
            reload and whenever it fills up. The compiled core
            (:func:`geofence.core_info`) parses and searches in about the time
            of a cache hit and takes no cache.
        signals: Computes workaround signals for requests with context, e.g.
            :class:`geofence.signals.pipeline.SignalPipeline`; ``None`` uses only
            ``context.signals``.
        max_age: Warn (or raise, with ``stale="error"``) when the data is older;
            by default 45 days or ``GEOFENCE_MAX_AGE_DAYS``, once per snapshot
            per process (:mod:`geofence.snapshot.freshness`); ``None``: no check.
        stale: ``"warn"`` or ``"error"`` for the data-age guard.
        today: A callable giving the date rules are compiled for (tests).
        retry: Backoff between retries of a failed watched reload or date refresh.
        shadow: Shadow mode: evaluate the policy fully but enforce ``allow``;
            each decision records what would have applied in
            :attr:`~geofence.decision.Decision.shadow_action` (as a policy with
            ``shadow = true``). Stays on across reloads.
    """

    def __init__(
        self,
        snapshot: Snapshot | str | os.PathLike[str] | None = None,
        policy: Policy | str | os.PathLike[str] | None = None,
        *,
        cache_size: int = 0,
        signals: SignalProvider | None = None,
        max_age: dt.timedelta | Default | None = DEFAULT_MAX_AGE,
        stale: str = "warn",
        today: Callable[[], dt.date] | None = None,
        retry: Retry | None = None,
        shadow: bool = False,
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        if stale not in ("warn", "error"):
            raise ValueError(f"stale must be 'warn' or 'error', got {stale!r}")
        self._cache_size = cache_size
        self._signals = signals
        self._max_age = resolve_max_age(max_age)
        self._stale = stale
        self._today = today or _utc_today
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._watcher: Watcher | None = None
        self._stop = threading.Event()
        self._retry = retry or Retry()
        self._monitor = ReloadMonitor()
        self._refresh_failures = 0
        self._shadow = bool(shadow)
        self._policy_given = policy is not None
        if policy is None:
            log.warning("geofence: Geofence() without a policy: allow-all applies to every address")
            policy = "allow-all"
        self._install(self._build(snapshot, policy))

    # -- state ------------------------------------------------------------------------------

    def _build(
        self,
        snapshot: Snapshot | str | os.PathLike[str] | None,
        policy: Policy | str | os.PathLike[str],
    ) -> _State:
        snap_path: str | None = None
        signature: tuple[int, int, int] | None = None
        if snapshot is None:
            snap = Snapshot.default()
            snap_path = snap.origin
        elif isinstance(snapshot, Snapshot):
            snap = snapshot
            snap_path = snap.origin if Path(snap.origin).is_file() else None
        else:
            snap_path = os.fspath(snapshot)
            signature = _file_signature(snap_path)
            snap = Snapshot.open(snap_path)
        warn_if_stale(snap, self._max_age, error=self._stale == "error")
        pol_ref: str | None = None
        if isinstance(policy, Policy):
            pol = policy
            pol_ref = policy.source if _rereads_as(policy) else None
        else:
            pol = load_policy(policy)
            pol_ref = pol.source
        if self._shadow and not pol.shadow:
            pol = replace(pol, shadow=True)
        compiled = compile_policy(pol, snap, today=self._today())
        return self._assemble(
            compiled,
            snapshot_path=snap_path,
            policy_ref=pol_ref,
            signature=signature or _file_signature(snap_path),
        )

    def _assemble(
        self,
        compiled: CompiledPolicy,
        *,
        snapshot_path: str | None,
        policy_ref: str | None,
        signature: tuple[int, int, int] | None,
    ) -> _State:
        """The state for ``compiled``, with its fast path bound to it."""
        state = _State(
            compiled=compiled,
            tunnel_variants={},
            snapshot_path=snapshot_path,
            policy_ref=policy_ref,
            snapshot_signature=signature,
            needs_context=compiled.policy.needs_context,
        )
        lookup = make_lookup(
            compiled.partitions,
            compiled.table,
            partial(self._decide_general, state),
            parsed=True,
        )
        decide = lookup
        if self._cache_size and isinstance(lookup, PyLookup):
            decide = _Cached(lookup, self._cache_size)
        verdict = make_lookup(
            compiled.verdict_partitions,
            compiled.verdicts,
            partial(self._verdict_general, state),
            parsed=True,
        )
        # The fields set after construction: the fast paths need the state they fall back to.
        object.__setattr__(state, "lookup", lookup)
        object.__setattr__(state, "decide", decide)
        object.__setattr__(state, "verdict", verdict)
        return state

    def _install(self, state: _State) -> None:
        self._state = state
        if type(self).decide is Geofence.decide:
            # ``gf.decide`` is then the fast path itself (a C callable with the
            # compiled core): no Python frame between the caller and the search.
            # A subclass that overrides decide() keeps its method.
            self.__dict__["decide"] = state.decide
        if type(self).verdict is Geofence.verdict:
            self.__dict__["verdict"] = state.verdict
        self._schedule_date_refresh(state.compiled)

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot in use."""
        return self._state.compiled.snapshot

    @property
    def policy(self) -> Policy:
        """The policy in use."""
        return self._state.compiled.policy

    @property
    def needs_context(self) -> bool:
        """Whether the policy in use has rules only a context can answer.

        Subject and signal rules are ``unresolved`` without a context; callers
        that gather evidence (the middleware) pass an empty one when there is
        none, so absent evidence is a plain "no". Read from the current state
        (one attribute chain, no walk over the rules).
        """
        return self._state.needs_context

    @property
    def compiled(self) -> CompiledPolicy:
        """The compiled policy in use."""
        return self._state.compiled

    # -- decisions --------------------------------------------------------------------------

    def decide(self, ip: Any, context: Context | None = None) -> Decision:
        """Decide one request.

        Args:
            ip: The client address: ``str``, packed ``bytes``, an :mod:`ipaddress`
                object or a :class:`~geofence.addr.ParsedAddress` (for an ``int``,
                use ``parse_address(n, version=4)``).
            context: Subject and client hints; rules that need it are evaluated
                only when it is given.

        Returns:
            The decision. Without context it is a shared precomputed object with
            ``address=None``; with context it is made for this request.

        Raises:
            InvalidAddressError: ``ip`` is not an acceptable address.
        """
        return self._state.decide(ip, context)

    def verdict(self, ip: Any, context: Context | None = None) -> Verdict:
        """The policy's verdict for one request, without the address's record details.

        Equal to ``Verdict.of(decide(ip, context))``, but without context it is
        searched among the compiled policy's own ranges (where its verdict changes),
        a few thousand instead of the data's hundreds of thousands of segments: for
        callers that need only the action, route and rule, such as a gate without
        audit lines. Use :meth:`decide` for country, kinds, ASN, reasons and sources.

        Args:
            ip: As for :meth:`decide`.
            context: As for :meth:`decide`.

        Returns:
            The verdict: for a plain address without context, a shared object of
            :attr:`CompiledPolicy.verdicts <geofence.policy.compile.CompiledPolicy.verdicts>`.

        Raises:
            InvalidAddressError: ``ip`` is not an acceptable address.
        """
        return self._state.verdict(ip, context)  # type: ignore[no-any-return]

    def _verdict_general(self, state: _State, ip: Any, context: Context | None = None) -> Verdict:
        """What the verdict fast path hands back (as for :meth:`_decide_general`)."""
        return Verdict.of(self._decide_general(state, ip, context))

    def _decide_general(self, state: _State, ip: Any, context: Context | None = None) -> Decision:
        """What the fast path hands back: context, other types, zone ids, tunnels, invalid text."""
        if context is not None:
            return self._decide_context(state, ip, context)
        addr = ip if isinstance(ip, ParsedAddress) else parse_address(ip)
        return self._decide_parsed(state, addr)

    def _decide_parsed(self, state: _State, addr: ParsedAddress) -> Decision:
        c = state.compiled
        vid = c.locate(addr.version, addr.value)
        if vid in TUNNEL_BY_ID:  # only for unwrap=False parses; resolve to the IPv4 inside
            addr = parse_address(addr.outer if addr.outer is not None else addr.value, version=6)
            vid = c.locate(addr.version, addr.value)
        d: Decision = c.table[vid]  # type: ignore[assignment]
        if addr.tunnel is None:
            return d
        key = (vid, addr.tunnel)
        variant = state.tunnel_variants.get(key)
        if variant is None:
            variant = replace(
                d, tunnel=addr.tunnel.value, reasons=(*d.reasons, f"tunnel:{addr.tunnel.value}")
            )
            variant = state.tunnel_variants.setdefault(key, variant)
        return variant

    def _prepare(self, state: _State, ip: Any) -> tuple[ParsedAddress, int, Any, Decision]:
        """Parse and look up: (address, virtual id, record, IP-only decision)."""
        c = state.compiled
        addr = ip if isinstance(ip, ParsedAddress) else parse_address(ip)
        vid = c.locate(addr.version, addr.value)
        if vid in TUNNEL_BY_ID:  # an unwrap=False parse: decide the IPv4 inside, as without context
            addr = parse_address(addr.value, version=6)
            vid = c.locate(addr.version, addr.value)
        record = c.records[vid]
        ip_only = _mark_jurisdiction(c, vid, record, self._decide_parsed(state, addr))
        return addr, vid, record, ip_only

    def _finish(
        self,
        state: _State,
        addr: ParsedAddress,
        vid: int,
        record: Any,
        context: Context,
        extra: Sequence[Signal],
        degraded: bool,
    ) -> Decision:
        """Evaluate the context rules with the gathered signals."""
        c = state.compiled
        weights = c.signal_weights
        signals = [
            replace(s, weight=weights[s.code]) if s.code in weights else s
            for s in (*context.signals, *extra)
        ]
        risk = float(sum(s.weight for s in signals))
        special = SPECIAL_BY_ID.get(vid) if vid < 0 else _base_special(c, vid)
        out = evaluate(
            c.policy,
            c.plans[vid],
            found=record is not None,
            special=special,
            context=context,
            signals=signals,
            risk=risk,
        )
        reasons = out.reasons
        if addr.tunnel is not None:
            reasons = (*reasons, f"tunnel:{addr.tunnel.value}")
        if degraded:
            reasons = (*reasons, "degraded")
        return make_decision(
            replace(out, reasons=reasons),
            record,
            special,
            c.snapshot.snapshot_id,
            c.policy,
            c.policy.digest,
            tunnel=addr.tunnel.value if addr.tunnel else None,
            risk=risk,
            signals=tuple(signals),
            degraded=degraded,
            address=addr.original_text,
        )

    def _decide_context(self, state: _State, ip: Any, context: Context) -> Decision:
        addr, vid, record, ip_only = self._prepare(state, ip)
        extra: Sequence[Signal] = ()
        degraded = False
        if self._signals is not None:
            extra, degraded = self._signals(addr, record, context, ip_only)
        return self._finish(state, addr, vid, record, context, extra, degraded)

    async def adecide(self, ip: Any, context: Context | None = None) -> Decision:
        """Async :meth:`decide` for ASGI apps.

        Without context this is :meth:`decide` (no I/O). With context, account
        history goes through the pipeline's asyncio store (e.g.
        ``AsyncRedisHistoryStore``) when it has one, so the event loop is not
        blocked by Redis round trips.
        """
        state = self._state
        if context is None:
            return state.decide(ip)
        addr, vid, record, ip_only = self._prepare(state, ip)
        extra: Sequence[Signal] = ()
        degraded = False
        provider = self._signals
        if provider is not None:
            acollect = getattr(provider, "acollect", None)
            if acollect is not None:
                extra, degraded = await acollect(addr, record, context, ip_only)
            else:
                extra, degraded = provider(addr, record, context, ip_only)
        return self._finish(state, addr, vid, record, context, extra, degraded)

    def decide_many(
        self, ips: Iterable[Any], *, version: int | None = None, errors: str = "raise"
    ) -> list[Decision]:
        """Decide a batch without context (vectorised with numpy where possible).

        Args:
            ips: Address strings, or integers with ``version`` (a numpy integer
                array of IPv4 addresses is searched without a Python loop).
            version: 4 or 6 when ``ips`` are integers.
            errors: ``"raise"`` (an invalid input raises) or ``"mark"`` (an
                invalid input gets a decision with ``outcome="invalid"``; see
                :func:`geofence._batch.invalid_decision`).

        Returns:
            One decision per input, in order.

        Raises:
            InvalidAddressError: An input is not an acceptable address (``"raise"``).
            ValueError: ``errors`` is neither ``"raise"`` nor ``"mark"``.
        """
        from geofence._batch import decide_many, decide_many_marked

        if errors == "mark":
            return decide_many_marked(self, ips, version=version)
        if errors != "raise":
            raise ValueError(f"errors must be 'raise' or 'mark', got {errors!r}")
        return decide_many(self, ips, version=version)

    def explain(self, ip: Any, context: Context | None = None) -> str:
        """The decision for ``ip`` in plain words, with the record and provenance."""
        addr = ip if isinstance(ip, ParsedAddress) else parse_address(ip)
        d = self.decide(addr, context)
        if d.address is None:
            d = d.with_address(addr.original_text)
        if d.asn is None:  # a policy without ASN rules: the snapshot's ASN table knows it
            found = self._state.compiled.snapshot.asn_table.find(addr.version, addr.value)
            d = dataclasses.replace(d, asn=found[0]) if found else d
        if self._policy_given:
            return d.explain()
        return d.explain() + "\nNote: Geofence() was given no policy; allow-all applies."

    # -- reload -----------------------------------------------------------------------------

    def reload(
        self,
        *,
        snapshot: Snapshot | str | os.PathLike[str] | None = None,
        policy: Policy | str | os.PathLike[str] | None = None,
    ) -> None:
        """Swap in a new snapshot and/or policy atomically.

        The new state is built (opened, validated, compiled) completely before it
        replaces the old one. If anything fails, the old state stays, the failure
        is recorded in :meth:`health` and logged, and the error is raised.

        Args:
            snapshot: New snapshot (or path); default: re-open the current file
                if it changed (by mtime, size or inode).
            policy: New policy (or path, or preset); default: re-load the current one.

        Raises:
            GeofenceError: The new snapshot or policy is invalid (old state kept).
        """
        try:
            self._reload_now(snapshot=snapshot, policy=policy)
        except Exception as exc:
            self._monitor.failed("manual", exc)
            raise
        self._monitor.succeeded("manual")

    def _reload_now(
        self,
        *,
        snapshot: Snapshot | str | os.PathLike[str] | None = None,
        policy: Policy | str | os.PathLike[str] | None = None,
    ) -> None:
        """:meth:`reload` without the record-keeping (each caller records its own trigger)."""
        with self._lock:
            old = self._state
            snap: Snapshot | str | os.PathLike[str]
            if snapshot is not None:
                snap = snapshot
            elif old.snapshot_path is not None and (
                old.snapshot_signature is None
                or _file_signature(old.snapshot_path) != old.snapshot_signature
            ):
                snap = old.snapshot_path  # the file changed: open it again
            else:
                snap = old.compiled.snapshot  # unchanged: no need to re-read and re-verify it
            pol: Policy | str | os.PathLike[str] = (
                policy if policy is not None else (old.policy_ref or old.compiled.policy)
            )
            state = self._build(snap, pol)
            self._install(state)

    def watch(self, interval: float = 5.0) -> None:
        """Start a daemon thread that reloads when the snapshot or policy file changes.

        Changes are detected by (mtime, size, inode), so both an atomic replace
        and an in-place rewrite are noticed (prefer the atomic replace: see
        ``docs/reliability.md``). A failed reload, whatever the error, is logged
        and recorded in :meth:`health`; the old state keeps serving and the
        reload is retried with backoff (``retry``) until it succeeds.

        Raises:
            ValueError: ``interval`` is not a finite positive number.
        """
        if self._watcher is not None and self._watcher.alive:
            return
        self._stop.clear()
        self._watcher = Watcher(
            self._watched_files,
            self._reload_now,
            self._monitor,
            interval=interval,
            retry=self._retry,
        )
        self._watcher.start()

    def _watched_files(self) -> tuple[object, ...]:
        """(mtime, size, inode) of the snapshot and policy files in use ("missing" if gone)."""
        state = self._state
        out: list[object] = []
        for path in (state.snapshot_path, state.policy_ref):
            out.append(None if path is None else (_file_signature(path) or "missing"))
        return tuple(out)

    def health(self) -> Health:
        """Reload health: last success, last error, state age, overdue date refresh.

        A health endpoint can serve ``health().as_dict()``; an alert fires on
        ``healthy`` being false (see ``docs/reliability.md``).
        """
        compiled = self._state.compiled
        due = compiled.valid_until
        return self._monitor.health(
            snapshot_id=compiled.snapshot.snapshot_id,
            policy_digest=compiled.policy.digest,
            watching=self._watcher is not None and self._watcher.alive,
            refresh_due=due,
            refresh_overdue=due is not None and self._today() >= due,
        )

    def add_reload_listener(self, listener: Callable[[ReloadEvent], None]) -> None:
        """Call ``listener`` after every reload attempt (watch, date refresh, manual).

        For metrics and alerting, e.g.
        :func:`geofence.reloading.prometheus_reload_metrics`. Listener errors
        are logged and ignored.
        """
        self._monitor.add_listener(listener)

    def close(self) -> None:
        """Stop the watcher and the date-refresh timer (the engine keeps deciding)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule_date_refresh(
        self, compiled: CompiledPolicy, retry_in: float | None = None
    ) -> None:
        """Recompile when a rule's effective date arrives (a daemon timer).

        Args:
            compiled: The compiled policy in use (its ``valid_until`` is the date).
            retry_in: Seconds until a retry of a failed refresh, instead of the date.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        until = compiled.valid_until
        if self._stop.is_set():
            return
        if retry_in is not None:
            delay = retry_in
        elif until is not None:
            now = dt.datetime.now(dt.UTC)
            at = dt.datetime.combine(until, dt.time(), tzinfo=dt.UTC)
            # At least a minute: when the configured `today` lags the UTC date (a
            # local-time clock), the boundary may be "due" by UTC but not yet by
            # `today`; retrying every second would recompile in a loop. At most a
            # day, so clock changes are picked up.
            delay = min(max((at - now).total_seconds(), 60.0), 86_400.0)
        else:
            return

        def fire() -> None:
            if not self._stop.is_set():  # closed while the timer was due
                self._refresh_dates()

        self._timer = threading.Timer(delay, fire)
        self._timer.daemon = True
        self._timer.start()

    def _refresh_dates(self) -> None:
        """Apply the rules of today's date: re-read the files or, failing that, recompile.

        A file that is broken or being rewritten must not keep a rule from
        starting on its date: when the reload fails, the policy and snapshot
        already in memory are compiled for today. Only if that fails too is the
        refresh retried, with backoff; either failure is recorded in :meth:`health`.
        """
        try:
            self._reload_now()
        except Exception as exc:
            self._monitor.failed("refresh", exc)
        else:
            self._refresh_failures = 0
            self._monitor.succeeded("refresh")
            return
        try:
            with self._lock:
                old = self._state
                compiled = compile_policy(
                    old.compiled.policy, old.compiled.snapshot, today=self._today()
                )
                self._install(
                    self._assemble(
                        compiled,
                        snapshot_path=old.snapshot_path,
                        policy_ref=old.policy_ref,
                        signature=old.snapshot_signature,
                    )
                )
        except Exception as exc:
            self._refresh_failures += 1
            self._monitor.failed("refresh", exc)
            retry_in = self._retry.delay(self._refresh_failures)
            self._schedule_date_refresh(self._state.compiled, retry_in=retry_in)
        else:
            self._refresh_failures = 0
            log.warning("geofence: applied today's rules from the policy in memory")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle by reference, for Dask, Spark and process pools.

        The pickle holds the snapshot by reference (its file path and digest;
        see :meth:`Snapshot.__reduce__ <geofence.Snapshot.__reduce__>`), the
        policy by value and the constructor settings. Unpickling builds a new
        engine on the worker: it reopens the snapshot file, refuses one whose
        digest differs (:class:`~geofence.SnapshotError`) and compiles the
        policy for the worker's date. Watchers and timers are not carried over.
        A custom ``today`` or ``signals`` provider must itself be picklable.
        """
        state = self._state
        today = None if self._today is _utc_today else self._today
        settings = (
            self._cache_size,
            self._signals,
            self._max_age,
            self._stale,
            today,
            self._shadow,
        )
        return _unpickle_geofence, (state.compiled.snapshot, state.compiled.policy, settings)

    def __enter__(self) -> Geofence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _utc_today() -> dt.date:
    """Today's date in UTC: the default date rules are compiled for."""
    return dt.datetime.now(dt.UTC).date()


def _unpickle_geofence(snapshot: Snapshot, policy: Policy, settings: tuple[Any, ...]) -> Geofence:
    """Rebuild a pickled :class:`Geofence` (see :meth:`Geofence.__reduce__`)."""
    cache_size, signals, max_age, stale, today, shadow = settings
    return Geofence(
        snapshot,
        policy,
        cache_size=cache_size,
        signals=signals,
        max_age=max_age,
        stale=stale,
        today=today,
        shadow=shadow,
    )


def _rereads_as(policy: Policy) -> bool:
    """Whether re-reading ``policy.source`` gives back this policy.

    Only then may :meth:`Geofence.reload` and :meth:`Geofence.watch` re-read the
    file: a preset loaded with ``params`` (or a policy changed after loading)
    would otherwise silently revert to the file's defaults.
    """
    if not Path(policy.source).is_file():
        return False
    try:
        return load_policy(policy.source).digest == policy.digest
    except GeofenceError:
        return False


def _base_special(c: CompiledPolicy, vid: int) -> Any:
    """Special category behind a virtual id (CIDR-carved special ranges)."""
    if vid < len(c.snapshot.records):
        return None
    d = c.table[vid]
    if d is None or d.special is None:
        return None
    from geofence.kinds import SpecialRange

    return SpecialRange(d.special)


def _mark_jurisdiction(c: CompiledPolicy, vid: int, record: Any, d: Decision) -> Decision:
    """Name the jurisdiction on an IP-only denial by a jurisdiction rule (for signal providers).

    The copy handed to a signal provider gets the reason ``"jurisdiction:<code>"`` when a rule
    with location conditions denied the address, so that account history remembers denials
    for a place, not denials for a network kind, ASN or CIDR (a subject denied on a cloud VM
    who then comes from home is not evading a jurisdiction). Returned decisions are unchanged.
    """
    if d.action is not Action.DENY or d.outcome != "rule" or record is None:
        return d
    for cand in c.plans[vid]:
        rule = cand.rule
        if rule.id != d.rule_id:
            continue
        code = None
        if rule.jurisdictions is not None:
            code = record.country if record.country in rule.jurisdictions else record.subdivision
        elif rule.not_jurisdictions is not None:
            code = record.country
        return replace(d, reasons=(*d.reasons, f"jurisdiction:{code}")) if code else d
    return d
