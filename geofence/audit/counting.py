"""Deciding and counting Arrow columns: work per distinct value, not per line.

The reference (:meth:`geofence.audit.run.Auditor` on
:class:`~geofence.audit.formats.Rows`) resolves, decides and counts every
line. A block of a busy log repeats itself: the same clients, the same
proxy and ``X-Forwarded-For`` pairs, the same minutes. Here each block's
columns are dictionary-encoded and the Python work is done once per distinct
value:

* ``(peer, X-Forwarded-For)`` pairs go through
  :func:`~geofence.audit.clients.resolve_forwarded` (the middleware's
  trusted-proxy resolution) once each, remembered across blocks;
* distinct client texts are decided with one ``decide_many`` call
  (:func:`~geofence.audit.clients.decide_texts`);
* requests per address come from the dictionary's counts, and requests per
  (minute, action) from one ``value_counts`` of an integer key per row.

Requests per address are not added into the tally's dictionaries block by
block: a busy log's clients come back in every block, and hashing their
texts into Python dictionaries again each time was the largest Python cost
of a block. Each block's (address, requests, decision) columns wait as an
Arrow batch instead; the batches are summed per address by Arrow and
numpy (dictionary encoding, ``bincount``) when they grow large, and folded
into the tally once, when it is read (:meth:`ColumnCounter.flush`).

The counts, the examples and the order in which keys first appear equal the
reference's, which the parity tests in ``tests/audit/test_vector_parity.py``
hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from geofence._batch import INVALID
from geofence.audit.clients import decide_texts, resolve_forwarded
from geofence.audit.columns import Columns
from geofence.audit.tally import Tally, action_name
from geofence.decision import Decision
from geofence.engine import Geofence
from geofence.signals.proxy import TrustedProxies

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pyarrow as pa

__all__ = ["ColumnCounter"]

#: Receives the decided lines that name a user: (client, user, Unix time) lists.
HistorySink = Callable[[list[str], list[str | None], list[float | None]], None]

#: Resolved (peer, X-Forwarded-For) pairs kept across blocks before the memo starts over.
_PAIRS_KEPT = 200_000
#: Waiting (address, requests) rows that trigger summing them per address (a few tens
#: of MiB); the bound doubles with the distinct addresses left after each sum.
_PENDING_ROWS = 500_000
#: Distinct decision objects the waiting rows may refer to before they are folded into
#: the tally: an engine's decisions are shared objects, a few hundred; one whose
#: decisions were not would otherwise keep one alive per row.
_PENDING_DECISIONS = 100_000
#: Decisions whose action names are remembered before the memo starts over.
_NAMES_KEPT = 100_000


class ColumnCounter:
    """Decides and counts the columns of one audit's blocks into its :class:`Tally`.

    Args:
        gf: The engine.
        tally: The audit's counts.
        trusted: Who may speak for the client in ``X-Forwarded-For``.
    """

    def __init__(self, gf: Geofence, tally: Tally, trusted: TrustedProxies) -> None:
        self.gf = gf
        self.tally = tally
        self.trusted = trusted
        self._pairs: dict[str, tuple[str | None, tuple[tuple[str, str], ...]]] = {}
        self._names: dict[int, tuple[Decision, str]] = {}
        self._pending = _PendingAddresses()

    def count(self, name: str, cols: Columns, history: HistorySink | None = None) -> None:
        """Decide and count the rows of ``cols`` (read from the source ``name``).

        Args:
            name: The source, for the examples of forwarding-header evidence.
            cols: One block's parsed lines.
            history: Given the decided lines with a user, in line order, when any.
        """
        if not len(cols):
            return
        import pyarrow as pa
        import pyarrow.compute as pc

        encoded = self.clients(name, cols).dictionary_encode()
        index = encoded.indices
        logged = encoded.dictionary.to_pylist()
        texts, decisions = decide_texts(self.gf, logged)
        # Decisions are shared objects: a block has few distinct ones. ``slot``: each
        # distinct address's position among them.
        ids = list(map(id, decisions))
        slot = pa.array(ids, pa.int64()).dictionary_encode().indices
        distinct = list(dict(zip(ids, decisions, strict=True)).values())
        invalid = pa.array([k for k, d in enumerate(distinct) if d.outcome == INVALID], pa.int32())
        valid = pc.invert(pc.is_in(slot, invalid)) if len(invalid) else None
        self._addresses(logged, texts, slot, distinct, _counts(index, len(logged)), valid)

        row_slot, minute = slot.take(index), cols.minute
        row_valid = valid.take(index) if valid is not None else None
        if row_valid is not None:
            row_slot, minute = row_slot.filter(row_valid), minute.filter(row_valid)
        self.tally.untimed += minute.null_count
        self._minutes(minute, row_slot, distinct)
        if history is None:
            return
        user = cols.user if row_valid is None else cols.user.filter(row_valid)
        if user.null_count < len(user):
            row_text = pa.array(texts, pa.large_string()).take(index)
            at = cols.at
            if row_valid is not None:
                row_text, at = row_text.filter(row_valid), at.filter(row_valid)
            history(row_text.to_pylist(), user.to_pylist(), at.to_pylist())

    def flush(self) -> None:
        """Add the requests per address counted so far into the tally (before reading it)."""
        self._pending.fold_into(self.tally)

    def _addresses(
        self,
        logged: list[str],
        texts: list[str],
        slot: pa.Array,
        distinct: list[Decision],
        lines: pa.Array,
        valid: pa.Array | None,
    ) -> None:
        """Count a block's distinct clients: invalid texts now, requests per address later.

        Args:
            logged: The distinct client texts as logged.
            texts: Each as counted (:func:`~geofence.audit.clients.decide_texts`).
            slot: Each one's decision, as a position in ``distinct``.
            distinct: The block's distinct decisions.
            lines: Each one's requests.
            valid: Which are valid addresses (``None``: all).
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        counted = pa.array(texts, pa.large_string())
        if valid is not None:
            dropped = pc.indices_nonzero(pc.invert(valid)).to_pylist()
            requests = lines.take(pa.array(dropped, pa.int64())).to_pylist()
            for k, n in zip(dropped, requests, strict=True):
                self.tally.invalid[logged[k][:200]] += n
            counted, slot, lines = counted.filter(valid), slot.filter(valid), lines.filter(valid)
        self._pending.add(counted, lines, slot, distinct)
        if self._pending.decisions > _PENDING_DECISIONS:
            self.flush()

    def _minutes(self, minute: pa.Array, row_slot: pa.Array, distinct: list[Decision]) -> None:
        """Count decided rows per (minute, action) (one integer key per row, one count)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        action_of = [self._action_name(d) for d in distinct]
        names = sorted(set(action_of))
        action = pa.array([names.index(a) for a in action_of], pa.int64())
        minutes = minute.dictionary_encode()
        key = pc.add(
            pc.multiply(minutes.indices.cast(pa.int64()), len(names)), action.take(row_slot)
        )
        found = pc.value_counts(key.drop_null())
        starts = minutes.dictionary.to_pylist()
        self.tally.timed(
            (starts[k // len(names)], names[k % len(names)], n)
            for k, n in zip(
                found.field("values").to_pylist(), found.field("counts").to_pylist(), strict=True
            )
        )

    def _action_name(self, d: Decision) -> str:
        """:func:`~geofence.audit.tally.action_name`, remembered per decision object."""
        known = self._names.get(id(d))
        if known is None or known[0] is not d:
            if len(self._names) >= _NAMES_KEPT:
                self._names.clear()
            known = self._names[id(d)] = (d, action_name(d))
        return known[1]

    def clients(self, name: str, cols: Columns) -> pa.Array:
        """Each row's client text: the peer, or whom a trusted proxy's header names."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if cols.xff.null_count == len(cols.xff):
            return cols.peer
        newline = pa.scalar("\n", pa.large_string())
        pairs = pc.binary_join_element_wise(cols.peer, cols.xff, newline).dictionary_encode()
        resolved = [self._resolve(key) for key in pairs.dictionary.to_pylist()]
        named = pa.array([client for client, _ in resolved], pa.large_string())
        if any(signals for _, signals in resolved):
            self._signals(name, pairs.indices, [signals for _, signals in resolved])
        return pc.coalesce(named.take(pairs.indices), cols.peer)

    def _resolve(self, key: str) -> tuple[str | None, tuple[tuple[str, str], ...]]:
        """How a ``peer``, newline, ``xff`` key resolves; memoised (it depends on nothing else)."""
        found = self._pairs.get(key)
        if found is None:
            if len(self._pairs) >= _PAIRS_KEPT:
                self._pairs.clear()
            peer, _, xff = key.partition("\n")
            found = self._pairs[key] = resolve_forwarded(peer, xff, self.trusted)
        return found

    def _signals(
        self, name: str, index: pa.Array, signals: list[tuple[tuple[str, str], ...]]
    ) -> None:
        """Count forwarding-header evidence per line, and keep the first lines' as examples."""
        tally = self.tally
        rows = index.drop_null()
        lines = _counts(rows, len(signals)).to_pylist()
        for pair, found in enumerate(signals):
            for code, _ in found:
                tally.client_signals[code] += lines[pair]
        # Examples: the first lines (in line order) that gave each code.
        wanted = {code for found in signals for code, _ in found}
        wanted = {code for code in wanted if tally.wants_signal_example(code)}
        if not wanted:
            return
        for pair in rows.to_pylist():
            for code, detail in signals[pair]:
                if code in wanted and not tally.signal_example(code, name, detail):
                    wanted.discard(code)
            if not wanted:
                break


class _PendingAddresses:
    """Requests per address of the blocks counted since the last fold, as Arrow batches.

    Addresses keep the order in which they first came (the tally's dictionaries
    are filled in that order, as the per-line path fills them): the batches
    are in block order, each block's addresses in order of first appearance,
    and summing numbers them by dictionary encoding, which keeps the order of first
    appearance.
    """

    def __init__(self) -> None:
        self._batches: list[pa.RecordBatch] = []
        self._rows = 0
        self._limit = _PENDING_ROWS
        self._decisions: list[Decision] = []  # the decisions the batches number
        self._number: dict[int, int] = {}  # id() of a decision -> its number

    def add(
        self, texts: pa.Array, requests: pa.Array, slot: pa.Array, distinct: list[Decision]
    ) -> None:
        """One block's addresses, their requests and decisions (positions in ``distinct``)."""
        import pyarrow as pa

        numbers = pa.array([self._numbered(d) for d in distinct], pa.int64())
        batch = pa.record_batch(
            [texts, requests, numbers.take(slot)], names=["address", "requests", "decision"]
        )
        self._batches.append(batch)
        self._rows += len(batch)
        if self._rows >= self._limit:
            summed = self._summed()
            self._batches, self._rows = [summed], len(summed)
            self._limit = max(self._limit, 2 * len(summed))

    @property
    def decisions(self) -> int:
        """Distinct decision objects the waiting batches refer to."""
        return len(self._decisions)

    def fold_into(self, tally: Tally) -> None:
        """Add the requests per address into ``tally`` and start over."""
        if not self._batches:
            return
        summed = self._summed()
        texts = summed.column("address").to_pylist()
        requests = tally.requests
        get = requests.get
        for text, n in zip(texts, summed.column("requests").to_pylist(), strict=True):
            requests[text] = get(text, 0) + n
        decisions = self._decisions
        tally.decision_of.update(
            zip(texts, [decisions[k] for k in summed.column("decision").to_pylist()], strict=True)
        )
        self._batches, self._rows = [], 0
        self._decisions, self._number = [], {}

    def _numbered(self, d: Decision) -> int:
        number = self._number.get(id(d))
        if number is None:
            number = self._number[id(d)] = len(self._decisions)
            self._decisions.append(d)  # kept alive, so its id() stays its own
        return number

    def _summed(self) -> pa.RecordBatch:
        """The waiting batches summed per address (an address has one decision)."""
        import numpy as np
        import pyarrow as pa

        table = pa.Table.from_batches(self._batches)
        # Numbered in order of first appearance, so the sums keep that order.
        encoded = table.column("address").combine_chunks().dictionary_encode()
        index = encoded.indices.to_numpy()
        size = len(encoded.dictionary)
        # float64 weights count exactly up to 2**53 requests per address.
        weights = table.column("requests").to_numpy()
        requests = np.bincount(index, weights=weights, minlength=size).astype(np.int64)
        decision = np.empty(size, np.int64)
        decision[index] = table.column("decision").to_numpy()
        return pa.record_batch(
            [encoded.dictionary, _int64(requests), _int64(decision)],
            names=["address", "requests", "decision"],
        )


def _counts(index: pa.Array, size: int) -> pa.Array:
    """Occurrences (``int64``) of each value ``0 .. size-1`` in a dictionary's index array."""
    import numpy as np

    counts = np.bincount(index.drop_null().to_numpy(), minlength=size)
    return _int64(counts.astype(np.int64, copy=False))


def _int64(values: npt.NDArray[np.int64]) -> pa.Array:
    """A numpy ``int64`` array as an Arrow array over the same memory.

    ``pa.array(ndarray)`` would first import ``numpy.ma`` to ask whether the
    array is a masked one (tens of milliseconds of an audit's start-up).
    """
    import pyarrow as pa

    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])
