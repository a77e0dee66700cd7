"""The Geofence engine: (snapshot, compiled policy) as one immutable state.

``decide`` on the request path does parse + bisect + index and returns a shared,
precomputed :class:`~geofence.decision.Decision`; it takes no lock. ``reload``
builds a complete new state first and swaps it in with one assignment, so a
request sees the old state or the new one, never a mix; a failed reload leaves
the old state in place.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import struct
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from socket import AF_INET, AF_INET6, inet_pton
from typing import Any

from geofence.addr import ParsedAddress, TunnelKind, parse_address
from geofence.context import Context
from geofence.decision import Action, Decision
from geofence.errors import GeofenceError
from geofence.policy.compile import CompiledPolicy, compile_policy, make_decision
from geofence.policy.evaluate import evaluate
from geofence.policy.model import Policy
from geofence.policy.parse import load_policy
from geofence.signals.base import Signal
from geofence.snapshot.freshness import DEFAULT_MAX_AGE, Default, resolve_max_age, warn_if_stale
from geofence.snapshot.partition import SPECIAL_BY_ID, TUNNEL_BY_ID, locate6_indexed
from geofence.snapshot.reader import Snapshot

__all__ = ["Geofence", "SignalProvider"]

log = logging.getLogger("geofence")

#: A callable that computes workaround signals for a request with context:
#: ``(address, record, context, ip_only_decision) -> (signals, degraded)``; see
#: :class:`geofence.signals.pipeline.SignalPipeline`.
SignalProvider = Callable[[ParsedAddress, Any, Context, Decision], tuple[Sequence[Signal], bool]]

_from_bytes = int.from_bytes
_unpack_v6 = struct.Struct(">QQ").unpack
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class _State:
    compiled: CompiledPolicy
    cache: dict[str, Decision] | None
    tunnel_variants: dict[tuple[int, TunnelKind], Decision]
    snapshot_path: str | None
    policy_ref: str | None
    snapshot_signature: tuple[int, int, int] | None = None
    needs_context: bool = False


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
            preset name.
        cache_size: Size of the per-address decision cache (0 disables it).
            Hits skip parsing and search; it is cleared on reload and whenever
            it fills up.
        signals: Computes workaround signals for requests with context, e.g.
            :class:`geofence.signals.pipeline.SignalPipeline`; ``None`` uses only
            ``context.signals``.
        max_age: Warn (or raise, with ``stale="error"``) when the data is older;
            by default 45 days or ``GEOFENCE_MAX_AGE_DAYS``, once per snapshot
            per process (:mod:`geofence.snapshot.freshness`); ``None``: no check.
        stale: ``"warn"`` or ``"error"`` for the data-age guard.
        today: A callable giving the date rules are compiled for (tests).
    """

    def __init__(
        self,
        snapshot: Snapshot | str | os.PathLike[str] | None = None,
        policy: Policy | str | os.PathLike[str] = "allow-all",
        *,
        cache_size: int = 0,
        signals: SignalProvider | None = None,
        max_age: dt.timedelta | Default | None = DEFAULT_MAX_AGE,
        stale: str = "warn",
        today: Callable[[], dt.date] | None = None,
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        if stale not in ("warn", "error"):
            raise ValueError(f"stale must be 'warn' or 'error', got {stale!r}")
        self._cache_size = cache_size
        self._signals = signals
        self._max_age = resolve_max_age(max_age)
        self._stale = stale
        self._today = today or (lambda: dt.datetime.now(dt.UTC).date())
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
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
        compiled = compile_policy(pol, snap, today=self._today())
        return _State(
            compiled=compiled,
            cache={} if self._cache_size else None,
            tunnel_variants={},
            snapshot_path=snap_path,
            policy_ref=pol_ref,
            snapshot_signature=signature or _file_signature(snap_path),
            needs_context=pol.needs_context,
        )

    def _install(self, state: _State) -> None:
        c = state.compiled
        # The hot path reads this one tuple: a single attribute load gives a
        # consistent view of the state, and tuple unpacking is cheaper than
        # several attribute lookups (serves decide()'s 0.6 µs budget).
        self._hot = (
            c.v4_starts,
            c.v4_ids,
            c.v4_index,
            c.table,
            state.cache,
            state,
            (c.v6_hi, c.v6_lo, c.v6_index, c.v6_ids),
        )
        self._schedule_date_refresh(c)

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot in use."""
        return self._hot[5].compiled.snapshot

    @property
    def policy(self) -> Policy:
        """The policy in use."""
        return self._hot[5].compiled.policy

    @property
    def needs_context(self) -> bool:
        """Whether the policy in use has rules only a context can answer.

        Subject and signal rules are ``unresolved`` without a context; callers
        that gather evidence (the middleware) pass an empty one when there is
        none, so absent evidence is a plain "no". Read from the current state
        (one attribute chain, no walk over the rules).
        """
        return self._hot[5].needs_context

    @property
    def compiled(self) -> CompiledPolicy:
        """The compiled policy in use."""
        return self._hot[5].compiled

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
        starts, ids, index, table, cache, state, v6 = self._hot
        if context is None and type(ip) is str:
            if cache is not None:
                hit = cache.get(ip)
                if hit is not None:
                    return hit
            # IPv4 text never contains ":"; testing first avoids paying for a
            # failed inet_pton (an exception) on every IPv6 request.
            if ":" in ip:
                # IPv6, inlined (no helper calls on the common path):
                # two 64-bit halves straight from the packed form, a bisect of
                # the high halves within the /16 bucket, the low halves only on a tie.
                hi, lo, ix, ids6 = v6
                try:
                    h, low = _unpack_v6(inet_pton(AF_INET6, ip))
                except (OSError, ValueError, UnicodeEncodeError):
                    d = self._decide_parsed(state, parse_address(ip))  # zone id, or invalid
                else:
                    p = h >> 48
                    i = bisect_right(hi, h, ix[p], ix[p + 1] + 1) - 1
                    if lo[i] > low and hi[i] == h:
                        i = locate6_indexed(hi, lo, ix, h, low)
                    d = table[ids6[i]]  # type: ignore[assignment]
                    if d is None:  # a tunnel prefix: unwrap, decide, record the tunnel
                        d = self._decide_parsed(state, parse_address(ip))
            else:
                try:
                    v = _from_bytes(inet_pton(AF_INET, ip), "big")
                except (OSError, ValueError):
                    d = self._decide_parsed(state, parse_address(ip))
                else:
                    p = v >> 16
                    d = table[ids[bisect_right(starts, v, index[p], index[p + 1] + 1) - 1]]  # type: ignore[assignment]
            if cache is not None:
                if len(cache) >= self._cache_size:
                    # Start over when full: O(1) and atomic. Evicting the oldest
                    # entry one by one made every miss walk the dict's deleted
                    # slots (measured 3 µs per miss on a 10k cache).
                    cache.clear()
                cache[ip] = d
            return d
        if context is None:
            if type(ip) is ParsedAddress and ip.tunnel is None:
                # What the middleware passes (the resolved client address): the
                # same search as above on the parsed value, no helper calls.
                v = ip.value
                if ip.version == 4:
                    p = v >> 16
                    return table[ids[bisect_right(starts, v, index[p], index[p + 1] + 1) - 1]]  # type: ignore[return-value]
                hi, lo, ix, ids6 = v6
                h = v >> 64
                low = v & _MASK64
                p = h >> 48
                i = bisect_right(hi, h, ix[p], ix[p + 1] + 1) - 1
                if lo[i] > low and hi[i] == h:
                    i = locate6_indexed(hi, lo, ix, h, low)
                d = table[ids6[i]]  # type: ignore[assignment]
                if d is not None:
                    return d
                # A tunnel prefix (an unwrap=False parse): the general path unwraps.
            return self._decide_other(state, ip)
        return self._decide_context(state, ip, context)

    def _decide_other(self, state: _State, ip: Any) -> Decision:
        """Other input types: bytes, ipaddress objects, ParsedAddress (no context)."""
        if type(ip) is str:
            return self.decide(ip)
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
        if context is None:
            return self.decide(ip)
        state = self._hot[5]
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

    def decide_many(self, ips: Iterable[Any], *, version: int | None = None) -> list[Decision]:
        """Decide a batch without context (vectorised with numpy where possible).

        Args:
            ips: Address strings, or integers with ``version`` (a numpy integer
                array of IPv4 addresses is searched without a Python loop).
            version: 4 or 6 when ``ips`` are integers.

        Returns:
            One decision per input, in order.

        Raises:
            InvalidAddressError: An input is not an acceptable address.
        """
        from geofence._batch import decide_many

        return decide_many(self, ips, version=version)

    def explain(self, ip: Any, context: Context | None = None) -> str:
        """The decision for ``ip`` in plain words, with the record and provenance."""
        addr = ip if isinstance(ip, ParsedAddress) else parse_address(ip)
        d = self.decide(addr, context)
        if d.address is None:
            d = d.with_address(addr.original_text)
        return d.explain()

    # -- reload -----------------------------------------------------------------------------

    def reload(
        self,
        *,
        snapshot: Snapshot | str | os.PathLike[str] | None = None,
        policy: Policy | str | os.PathLike[str] | None = None,
    ) -> None:
        """Swap in a new snapshot and/or policy atomically.

        The new state is built (opened, validated, compiled) completely before it
        replaces the old one. If anything fails, the old state stays and the
        error is raised.

        Args:
            snapshot: New snapshot (or path); default: re-open the current file.
            policy: New policy (or path, or preset); default: re-load the current one.

        Raises:
            GeofenceError: The new snapshot or policy is invalid (old state kept).
        """
        with self._lock:
            old = self._hot[5]
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

        Changes are detected by (mtime, size, inode). A failed reload is logged
        and retried on the next change; the old state keeps serving.
        """
        if self._watcher is not None:
            return
        self._stop.clear()

        def signature() -> tuple[object, ...]:
            st = self._hot[5]
            out: list[object] = []
            for path in (st.snapshot_path, st.policy_ref):
                if path is None:
                    out.append(None)
                    continue
                try:
                    s = os.stat(path)
                    out.append((s.st_mtime_ns, s.st_size, s.st_ino))
                except OSError:
                    out.append("missing")
            return tuple(out)

        # The baseline is taken here, not in the thread: a change made right after
        # watch() returns must not become the thread's baseline and go unnoticed.
        last = signature()

        def run() -> None:
            nonlocal last
            while not self._stop.wait(interval):
                now = signature()
                if now == last:
                    continue
                last = now
                try:
                    self.reload()
                    log.info("geofence: reloaded after a file change")
                except GeofenceError as exc:
                    log.error("geofence: reload failed, keeping the old state: %s", exc)

        self._watcher = threading.Thread(target=run, name="geofence-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        """Stop the watcher and the date-refresh timer (the engine keeps deciding)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule_date_refresh(self, compiled: CompiledPolicy) -> None:
        """Recompile when a rule's effective date arrives (a daemon timer)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if compiled.valid_until is None or self._stop.is_set():
            return
        now = dt.datetime.now(dt.UTC)
        at = dt.datetime.combine(compiled.valid_until, dt.time(), tzinfo=dt.UTC)
        # At least a minute: when the configured `today` lags the UTC date (a
        # local-time clock), the boundary may be "due" by UTC but not yet by
        # `today`; retrying every second would recompile in a loop. At most a
        # day, so clock changes are picked up.
        delay = min(max((at - now).total_seconds(), 60.0), 86_400.0)

        def fire() -> None:
            if self._stop.is_set():
                return  # closed while the timer was due
            try:
                self.reload()
            except GeofenceError as exc:  # pragma: no cover - logged, old state kept
                log.error("geofence: date refresh failed: %s", exc)

        self._timer = threading.Timer(delay, fire)
        self._timer.daemon = True
        self._timer.start()

    def __enter__(self) -> Geofence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
