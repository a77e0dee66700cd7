"""The Dask recipe on a real distributed.LocalCluster of two worker processes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geofence.engine import Geofence
from tests.audit.conftest import ENGINE_LOG_JUNK, engine_log_clients

distributed = pytest.importorskip("distributed", reason="the audit extra is not installed")
pytest.importorskip("pyarrow", reason="the audit extra is not installed")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A cluster of two worker processes on loopback, closed after the module."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    try:
        with distributed.Client(cluster) as c:
            yield c
    finally:
        cluster.close()


def test_dask_map_partitions(client: Any, engine: Geofence, engine_log: Path) -> None:
    """Partitions of the log are parsed and decided on both workers; totals equal decide()."""
    from geofence.audit.recipes import dask_action_counts

    got = dask_action_counts(client, engine, [str(engine_log)], blocksize="200KiB")
    want: Counter[str | None] = Counter(
        engine.decide(ip).action.value for ip in engine_log_clients()
    )
    want[None] = ENGINE_LOG_JUNK
    assert got == dict(want)
    # The work really ran in worker processes, each holding its own reopened engine.
    workers = client.run(lambda: __import__("os").getpid())
    assert len(workers) == 2


def test_worker_refuses_another_snapshot(client: Any, engine: Geofence, tmp_path: Path) -> None:
    """An engine pickled against one file is refused on a worker whose file differs."""
    import pickle

    from geofence.errors import SnapshotError
    from geofence.policy.parse import parse_policy
    from tests.audit.conftest import NETWORKS, POLICY, snapshot_bytes

    path = tmp_path / "data.gfs"
    path.write_bytes(snapshot_bytes(NETWORKS))
    gf = Geofence(path, parse_policy(POLICY, source="<p>"))
    blob = pickle.dumps(gf)
    path.write_bytes(snapshot_bytes({**NETWORKS, "99.0.0.0/8": {"country": "FR"}}, name="x"))

    def unpickle(data: bytes) -> str:
        try:
            pickle.loads(data)
        except SnapshotError as exc:
            return str(exc)
        return "accepted"

    assert "differs from the pickled snapshot" in client.submit(unpickle, blob).result()
