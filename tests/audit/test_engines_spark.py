"""The Spark recipe: mapInArrow in local[2], one session for the module."""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geofence.engine import Geofence
from tests.audit.conftest import ENGINE_LOG_JUNK, engine_log_clients

pytest.importorskip("pyspark", reason="the audit extra is not installed")
pytest.importorskip("pandas", reason="pyspark's mapInArrow needs pandas (the audit extra)")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("java") is None, reason="no Java (apt-get install default-jre-headless)"
    ),
]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """A local[2] Spark session bound to loopback, stopped after the module."""
    import os

    from pyspark.sql import SparkSession

    saved = {k: os.environ.get(k) for k in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    os.environ.update(dict.fromkeys(saved, sys.executable))  # workers run this interpreter
    session = (
        SparkSession.builder.master("local[2]")
        .appName("geofence-audit-test")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    try:
        yield session
    finally:
        session.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_spark_map_in_arrow(spark: Any, engine: Geofence, engine_log: Path) -> None:
    """Lines read by Spark, parsed and decided in Python workers; counts equal decide()."""
    from geofence.audit.recipes import spark_audit

    lines = spark.read.text(str(engine_log)).repartition(2)
    audited = spark_audit(lines, engine)
    got = {row["action"]: row["count"] for row in audited.groupBy("action").count().collect()}
    want: Counter[str | None] = Counter(
        engine.decide(ip).action.value for ip in engine_log_clients()
    )
    want[None] = ENGINE_LOG_JUNK
    assert got == dict(want)
    per_country = {
        row["country"]: row["count"]
        for row in audited.where("error IS NULL").groupBy("country").count().collect()
    }
    assert per_country == dict(Counter(engine.decide(ip).country for ip in engine_log_clients()))
