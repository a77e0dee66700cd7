"""The DuckDB and Polars recipes (in-process engines): counts equal decide() per address."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from geofence.engine import Geofence
from tests.audit.conftest import ENGINE_LOG_IPS, ENGINE_LOG_JUNK, engine_log_clients

pa = pytest.importorskip("pyarrow", reason="the audit extra is not installed")


def _expected(engine: Geofence) -> dict[str | None, int]:
    want: Counter[str | None] = Counter(
        engine.decide(ip).action.value for ip in engine_log_clients()
    )
    want[None] = ENGINE_LOG_JUNK
    return dict(want)


def test_duckdb_arrow_scan(engine: Geofence, engine_log: Path) -> None:
    """DuckDB scans the stream of decided batches; its GROUP BY equals decide() per line."""
    duckdb = pytest.importorskip("duckdb", reason="the audit extra is not installed")
    from geofence.audit.recipes import duckdb_action_counts

    con = duckdb.connect()
    assert duckdb_action_counts(con, engine, str(engine_log)) == _expected(engine)


def test_duckdb_udf(engine: Geofence) -> None:
    """geofence_action(ip) in SQL over a table of addresses, invalid ones included."""
    duckdb = pytest.importorskip("duckdb", reason="the audit extra is not installed")
    from geofence.audit.recipes import duckdb_register_udf

    con = duckdb.connect()
    duckdb_register_udf(con, engine)
    ips = [*engine_log_clients(5000), "junk", None]
    con.register("t", pa.table({"ip": pa.array(ips, pa.string())}))
    got = dict(con.sql("SELECT geofence_action(ip), count(*) FROM t GROUP BY 1").fetchall())
    want: Counter[str | None] = Counter(engine.decide(ip).action.value for ip in ips[:-2])
    want["review"] += 1  # "junk": an invalid row gets the policy's on_unresolved
    want[None] += 1  # SQL: a NULL address gives NULL
    assert got == dict(want)


def test_polars_map_batches(engine: Geofence) -> None:
    """Polars map_batches adds the decision's columns; they equal decide() row by row."""
    pl = pytest.importorskip("polars", reason="the audit extra is not installed")
    from geofence.audit.recipes import polars_decide

    ips = engine_log_clients(3000)
    frame = polars_decide(pl.DataFrame({"client": ips}).lazy(), engine).collect()
    assert frame.columns[:3] == ["client", "action", "route"]
    rows = frame.select("client", "action", "rule_id", "country", "asn").rows()
    for ip, action, rule, country, asn in rows:
        d = engine.decide(ip)
        assert (action, rule, country, asn) == (d.action.value, d.rule_id, d.country, d.asn)
    counts = dict(frame.group_by("action").len().rows())
    assert counts == dict(Counter(engine.decide(ip).action.value for ip in ips))
    assert set(frame["client"]) == set(ENGINE_LOG_IPS)


def test_polars_raw_lines(engine: Geofence, engine_log: Path) -> None:
    """Polars reads the log's lines; map_batches parses and decides them: counts equal decide()."""
    pl = pytest.importorskip("polars", reason="the audit extra is not installed")
    from geofence.audit.recipes import polars_audit

    lines = pl.DataFrame({"line": engine_log.read_text().splitlines()})
    audited = polars_audit(lines.lazy(), engine).collect()
    assert audited.height == lines.height
    assert dict(audited.group_by("action").len().rows()) == _expected(engine)
