"""Fixtures for the export tests: compiled bundled policies, address samples, edge servers.

Edge programs (nginx, HAProxy) are started by the tests on 127.0.0.1 on a free
port, asked over one keep-alive connection per family, and stopped afterwards.
"""

from __future__ import annotations

import datetime as dt
import http.client
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Final

import pytest

from geofence.decision import Action, Decision
from geofence.export import VerdictTable, compile_for_edge, verdict_table
from geofence.export.cidr import address_text
from geofence.policy.compile import CompiledPolicy
from geofence.snapshot.reader import Snapshot

#: A fixed compile date after every preset's effective dates.
TODAY: Final = dt.date(2026, 11, 27)
#: The fixed generation time written in the headers of test exports.
GENERATED: Final = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
TEREDO: Final = (0x20010000 << 96, (0x20010000 << 96) | ((1 << 96) - 1))


@cache
def bundled() -> Snapshot:
    """The bundled snapshot (opened once per test session)."""
    return Snapshot.default()


@cache
def compiled(preset: str) -> CompiledPolicy:
    """A preset compiled against the bundled data for :data:`TODAY`."""
    return compile_for_edge(preset, bundled(), today=TODAY)


@cache
def table(preset: str) -> VerdictTable:
    """The verdict table of a preset on the bundled data."""
    return verdict_table(compiled(preset))


def key_of(decision: Decision) -> str:
    """The map value a decision corresponds to (compared by enum member)."""
    if decision.action is Action.ROUTE:
        return f"route:{decision.route}"
    name: str = decision.action.value
    return name


def sample(vt: VerdictTable, version: int, n: int, seed: int) -> list[str]:
    """``n`` addresses of one family: both ends of random ranges and random inner points.

    Range ends catch off-by-one errors at every verdict boundary; Teredo addresses
    are left out (their verdict is stated, not decided per address).
    """
    rng = random.Random(seed)
    ranges = [
        r
        for r in vt.partition(version).ranges()
        if version == 4 or r[0] > TEREDO[1] or r[1] < TEREDO[0]
    ]
    out: list[str] = []
    while len(out) < n:
        first, last, _ = rng.choice(ranges)
        pick = rng.randrange(3)
        value = first if pick == 0 else last if pick == 1 else rng.randint(first, last)
        out.append(address_text(version, value))
    return out


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def need(program: str) -> str:
    """Path of an edge program, or skip (only when it is not installed)."""
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/sbin/{program}") if Path(p).exists()), None
    )
    if path is None:
        pytest.skip(f"{program} is not installed (.ci/run installs it with apt-get)")
    return path


@contextmanager
def serving(command: Sequence[str], port: int, log: Path) -> Iterator[None]:
    """Run a server in the foreground until the block ends; wait until it accepts."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15.0
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{command[0]} did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ask_all(port: int, path: str, addresses: Sequence[str], *, budget: float = 120.0) -> list[str]:
    """The body the server returns for each address sent as ``X-Real-IP``.

    One keep-alive connection, reopened if the server closes it; bounded by ``budget`` seconds.
    """
    deadline = time.monotonic() + budget
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    answers: list[str] = []
    try:
        for address in addresses:
            if time.monotonic() > deadline:
                raise AssertionError(f"asked {len(answers)} of {len(addresses)} within {budget}s")
            conn.request("GET", path, headers={"X-Real-IP": address})
            response = conn.getresponse()
            answers.append(response.read().decode().strip())
            if response.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    finally:
        conn.close()
    return answers
