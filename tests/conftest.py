"""Fixtures shared by the whole test suite, and the Hypothesis profile it runs under."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from geofence.snapshot.reader import Snapshot

# Property tests check invariants, not speed (benchmarks/ measures that): on a loaded CI
# machine a per-example deadline only turns slow examples into flaky failures.
settings.register_profile("geofence", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("GEOFENCE_HYPOTHESIS_PROFILE", "geofence"))


@pytest.fixture(scope="session")
def bundled_snapshot() -> Snapshot:
    """The bundled snapshot, opened once per session (a Snapshot is immutable)."""
    return Snapshot.default()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis server for tests marked ``redis``.

    Uses ``GEOFENCE_TEST_REDIS_URL`` when set; otherwise starts a throwaway
    ``redis-server`` (no persistence) on a free loopback port for the session;
    otherwise skips.
    """
    url = os.environ.get("GEOFENCE_TEST_REDIS_URL")
    if url:
        yield url
        return
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server not available (install it or set GEOFENCE_TEST_REDIS_URL)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = tmp_path_factory.mktemp("redis")
    # fmt: off
    command = [
        executable, "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(workdir),
    ]
    # fmt: on
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10.0
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
