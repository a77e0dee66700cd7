"""The batch API the audits and the scale-out recipes stand on.

``decide_many(errors="mark")``, :func:`geofence.batch_arrow.decide_arrow` and
pickling by reference (:meth:`Geofence.__reduce__`, :meth:`Snapshot.__reduce__`).
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.decision import Action, Decision
from geofence.engine import Geofence
from geofence.errors import InvalidAddressError, SnapshotError
from geofence.kinds import kinds_to_names
from geofence.policy.parse import parse_policy
from geofence.snapshot.reader import Snapshot
from geofence.testing import make_geofence
from tests.audit.conftest import NETWORKS, POLICY, snapshot_bytes

pa = pytest.importorskip("pyarrow", reason="the audit extra (pyarrow) is not installed")

from geofence.batch_arrow import DECISION_FIELDS, decide_arrow, decision_schema  # noqa: E402

_GOOD = [
    "5.1.2.3",
    "31.0.9.9",
    "8.8.8.8",
    "46.2.2.2",
    "185.0.3.3",
    "2a00::5",
    "10.1.1.1",
    "99.9.9.9",
    "::ffff:5.1.2.3",
]
_BAD = ["", "junk", "1.2.3.4:80", "[2a00::1]", "300.1.1.1", "fe80::1%", "1.2.3"]


def _expected(gf: Geofence, item: object) -> Decision | None:
    """decide() for a valid address, None for an invalid one."""
    try:
        return gf.decide(item)
    except InvalidAddressError:
        return None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(_GOOD + _BAD) | st.text(max_size=12), max_size=300))
def test_mark_equals_decide_or_invalid(engine: Geofence, items: list[str]) -> None:
    """errors="mark": each row is decide(ip), or an invalid row for an input decide() rejects."""
    rows = engine.decide_many(items, errors="mark")
    assert len(rows) == len(items)
    for item, row in zip(items, rows, strict=True):
        want = _expected(engine, item)
        if want is None:
            assert row.outcome == "invalid"
            assert row.reasons == ("invalid_address",)
            assert row.address == item[:200]
            assert row.action is Action.REVIEW  # the policy's on_unresolved
        else:
            assert row == want


def test_raise_is_unchanged(engine: Geofence) -> None:
    """errors="raise" (the default) still raises on the first invalid input."""
    with pytest.raises(InvalidAddressError, match="junk"):
        engine.decide_many(["8.8.8.8"] * 100 + ["junk"])
    with pytest.raises(ValueError, match="errors must be"):
        engine.decide_many(["8.8.8.8"], errors="ignore")


def test_mark_integers_and_non_strings(engine: Geofence) -> None:
    """Out-of-range integers and non-address objects are marked, not raised."""
    np = pytest.importorskip("numpy")
    rows = engine.decide_many(np.array([0x05010203, 2**40, -1]), version=4, errors="mark")
    assert rows[0] == engine.decide("5.1.2.3")
    assert [r.outcome for r in rows[1:]] == ["invalid", "invalid"]
    rows = engine.decide_many([None, 3.5, b"\x05\x01\x02\x03"], errors="mark")
    assert [r.outcome for r in rows[:2]] == ["invalid", "invalid"]
    assert rows[2] == engine.decide("5.1.2.3")


def test_decide_arrow_columns(engine: Geofence) -> None:
    """decide_arrow gives one row per address with the decision's fields; nulls are invalid."""
    addresses = [*_GOOD, *_BAD, None]
    batch = decide_arrow(engine, pa.array(addresses))
    assert batch.schema == decision_schema()
    assert [f.name for f in batch.schema] == [name for name, _ in DECISION_FIELDS]
    rows = batch.to_pylist()
    for item, row in zip(addresses, rows, strict=True):
        want = _expected(engine, item) if item is not None else None
        if want is None:
            assert row["outcome"] == "invalid"
            continue
        assert row == {
            "action": want.action.value,
            "route": want.route,
            "rule_id": want.rule_id,
            "outcome": want.outcome,
            "country": want.country,
            "subdivision": want.subdivision,
            "asn": want.asn,
            "kinds": kinds_to_names(want.kinds),
        }


def test_decide_arrow_chunked_and_large_string(engine: Geofence) -> None:
    """Chunked and large_string arrays give the same rows as a plain string array."""
    plain = decide_arrow(engine, pa.array(_GOOD))
    chunked = pa.chunked_array([_GOOD[:4], _GOOD[4:]], type=pa.large_string())
    assert decide_arrow(engine, chunked).to_pylist() == plain.to_pylist()


def test_decide_arrow_rejects_non_strings(engine: Geofence) -> None:
    """An integer array is a TypeError naming the type, not a crash deep inside."""
    with pytest.raises(TypeError, match="int64"):
        decide_arrow(engine, pa.array([1, 2, 3]))


def test_pickle_round_trip(engine: Geofence) -> None:
    """A pickled engine reopens the same file and decides alike; the pickle is small."""
    blob = pickle.dumps(engine)
    assert len(blob) < 20_000  # by reference: no ranges inside
    copy = pickle.loads(blob)
    assert copy.snapshot.digest == engine.snapshot.digest
    assert copy.policy.digest == engine.policy.digest
    for ip in _GOOD:
        assert copy.decide(ip) == engine.decide(ip)


def test_pickle_bundled_default() -> None:
    """The bundled snapshot pickles as "the bundled data" and reopens there."""
    gf = Geofence(policy="us-ofac-comprehensive")
    copy = pickle.loads(pickle.dumps(gf))
    assert copy.snapshot.origin == gf.snapshot.origin
    assert copy.decide("8.8.8.8") == gf.decide("8.8.8.8")


def test_pickle_refuses_changed_file(tmp_path: Path) -> None:
    """A worker whose file has another digest refuses to unpickle (SnapshotError)."""
    path = tmp_path / "data.gfs"
    path.write_bytes(snapshot_bytes(NETWORKS))
    gf = Geofence(path, parse_policy(POLICY, source="<p>"))
    snap_blob, gf_blob = pickle.dumps(gf.snapshot), pickle.dumps(gf)
    other = dict(NETWORKS)
    other["99.0.0.0/8"] = {"country": "FR"}
    path.write_bytes(snapshot_bytes(other, name="other"))
    for blob in (snap_blob, gf_blob):
        with pytest.raises(SnapshotError, match="differs from the pickled snapshot"):
            pickle.loads(blob)
    shutil.copyfile(path, tmp_path / "unused.gfs")
    path.unlink()
    with pytest.raises(SnapshotError, match="cannot read snapshot"):
        pickle.loads(gf_blob)


def test_pickle_refuses_in_memory_snapshot() -> None:
    """A snapshot made from bytes has no file to reopen: pickling says so."""
    gf = make_geofence({"5.0.0.0/8": {"country": "IR"}})
    with pytest.raises(SnapshotError, match="only file-backed snapshots"):
        pickle.dumps(gf)
    with pytest.raises(SnapshotError, match="only file-backed snapshots"):
        pickle.dumps(gf.snapshot)


def test_pickle_keeps_settings(snapshot_file: Path) -> None:
    """cache_size, stale and shadow survive pickling; an unpickled Snapshot is a Snapshot."""
    policy = parse_policy(POLICY, source="<p>")
    gf = Geofence(snapshot_file, policy, cache_size=64, stale="error", max_age=None, shadow=True)
    copy = pickle.loads(pickle.dumps(gf))
    assert copy._cache_size == 64
    assert copy._stale == "error"
    assert copy._shadow is True
    assert isinstance(pickle.loads(pickle.dumps(gf.snapshot)), Snapshot)


def test_mark_is_one_state_under_reloads(snapshot_file: Path) -> None:
    """Threads deciding marked batches while another reloads: each batch reflects one policy."""
    import threading

    deny = parse_policy(POLICY, source="<deny>")
    allow = parse_policy('[policy]\nid = "open"\n', source="<open>")
    gf = Geofence(snapshot_file, deny)
    batch = ["5.1.2.3"] * 300 + ["junk"] + ["5.1.2.3"] * 300 + ["1.2.3"] * 3
    stop = threading.Event()
    mixed: list[set[str]] = []

    def reloader() -> None:
        flip = False
        while not stop.is_set():
            gf.reload(policy=allow if flip else deny)
            flip = not flip

    def decider() -> None:
        for _ in range(30):
            rows = gf.decide_many(batch, errors="mark")
            actions = {r.action.value for r in rows if r.outcome != "invalid"}
            policies = {r.policy_id for r in rows}
            if len(actions) != 1 or len(policies) != 1:
                mixed.append(actions | policies)

    threads = [
        threading.Thread(target=reloader),
        *(threading.Thread(target=decider) for _ in range(2)),
    ]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join(timeout=120)
    stop.set()
    threads[0].join(timeout=30)
    assert mixed == []
