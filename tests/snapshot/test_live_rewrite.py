"""A server survives its snapshot file being rewritten in place under ``watch()``.

Operators do ``cp new.gfs live.gfs``: the file is truncated and rewritten while
the server may be reading it. A snapshot mapped with ``mmap`` then raises
``SIGBUS`` on the first page past the new end, which kills the process with no
exception. This test runs a real server process (the bundled snapshot, a
sanctions preset, ``watch(0.05)``, a thread deciding in a loop) while the test
rewrites the served file in place every ~20 ms, alternating two snapshots with
the same tables but different bytes and sizes, and asserts that the process lives, keeps answering correctly, and
settles on the last file written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from geofence.snapshot.build import encode_snapshot
from geofence.snapshot.reader import Snapshot, default_snapshot_path

#: The server: decides an Iranian and a German address in a loop until stdin closes,
#: then waits (bounded) for a healthy reload and reports what it saw as JSON.
SERVER = r"""
import json, sys, threading, time
from geofence import Geofence

gf = Geofence(sys.argv[1], "us-ofac-comprehensive")
gf.watch(0.05)
expect = {"5.160.0.1": gf.decide("5.160.0.1").action.value,
          "2.16.6.1": gf.decide("2.16.6.1").action.value}
counts = {"answers": 0, "wrong": 0}
done = threading.Event()

def serve():
    while not done.is_set():
        for ip, action in expect.items():
            counts["answers"] += 1
            if gf.decide(ip).action.value != action:
                counts["wrong"] += 1

worker = threading.Thread(target=serve)
worker.start()
print("ready", flush=True)
sys.stdin.read()
answers_during_writes = counts["answers"]
deadline = time.monotonic() + 30
while time.monotonic() < deadline and not (gf.health().healthy and gf.snapshot.snapshot_id == sys.argv[2]):
    time.sleep(0.05)
done.set()
worker.join()
health = gf.health()
print(json.dumps({**counts, "during": answers_during_writes, "snapshot": gf.snapshot.snapshot_id,
                  "healthy": health.healthy, "failures": health.failures,
                  "reloads": health.reloads}), flush=True)
"""


def _rewrite_in_place(source: Path, target: Path) -> None:
    """What ``cp`` does: truncate the target, then write into the same inode."""
    with source.open("rb") as src, target.open("r+b") as dst:
        dst.truncate(0)
        shutil.copyfileobj(src, dst, length=1 << 20)


def _same_tables_other_bytes(snap: Snapshot) -> bytes:
    """The snapshot re-encoded with a longer META: same answers, another size and digest."""
    v4 = list(snap.ranges(4))
    v6 = list(snap.ranges(6))
    return encode_snapshot(
        meta={**snap.meta, "name": "rewritten", "padding": "x" * 4096},
        records=snap.records,
        v4=([first for first, _, _ in v4], [rid for _, _, rid in v4]),
        v6=([first for first, _, _ in v6], [rid for _, _, rid in v6]),
    )


def test_server_survives_in_place_rewrites_under_watch(tmp_path: Path) -> None:
    """Rewrites every ~20 ms for 3 s or more: no crash, no wrong answer, last file served."""
    bundled = default_snapshot_path()
    snap = Snapshot.open(bundled)
    other = tmp_path / "other.gfs"
    other.write_bytes(_same_tables_other_bytes(snap))
    live = tmp_path / "live.gfs"
    shutil.copyfile(bundled, live)
    final_id = snap.snapshot_id
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(live), final_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdin is not None
        assert server.stdout.readline().strip() == "ready"
        writes = 0
        started = time.monotonic()
        # At least 3 s and 30 rewrites (a loaded machine copies slower), at most 30 s.
        while server.poll() is None and time.monotonic() - started < 30.0:
            if writes >= 30 and time.monotonic() - started >= 3.0:
                break
            _rewrite_in_place(other if writes % 2 else bundled, live)
            writes += 1
            time.sleep(0.02)
        _rewrite_in_place(bundled, live)
        assert server.poll() is None, f"server died with {server.returncode} after {writes} writes"
        out, err = server.communicate("", timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, err[-2000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert writes >= 30
    assert report["during"] > 1000
    assert report["wrong"] == 0
    assert report["snapshot"] == final_id
    assert report["healthy"], err[-2000:]
