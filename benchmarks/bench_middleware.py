"""Middleware benchmark: a FastAPI app under uvicorn, with and without GeofenceMiddleware.

Usage (from a checkout)::

    python benchmarks/bench_middleware.py                # 5 s + 15 s paced per server
    python benchmarks/bench_middleware.py --smoke        # 1 s per server (CI)
    python benchmarks/bench_middleware.py --seconds 10 --connections 16
    python benchmarks/bench_middleware.py --instructions   # instructions per request (valgrind)

Four uvicorn servers run side by side, each in a subprocess on a free 127.0.0.1
port (one worker, ``--no-proxy-headers``, no access log): ``plain`` (no
middleware), ``audited`` (the ASGI middleware on the bundled snapshot with a
small policy, audit lines through the audit queue to os.devnull), ``unaudited``
(the same without audit lines; ``--no-audit`` leaves ``audited`` out) and
``plain-b``, a second plain server: the A/A control, whose ratio to ``plain``
shows in the same run how finely the method resolves a difference
(``--no-control`` leaves it out). A loopback load generator (raw asyncio
HTTP/1.1 keep-alive, one request in flight per connection) sends ``GET
/v1/models`` with a seeded client address in ``X-Forwarded-For``; the servers
trust 127.0.0.1, so the middleware decides on that address and decisions vary
(allow, deny -> 451, route, review). Every server gets the same address
sequence in a round. The script exits non-zero if any request fails (a
connection error, a malformed response, or a status the server cannot produce:
anything but 200 from ``plain``, anything but 200/451 from the others).

Client and servers share the machine: absolute figures depend on it; the
ratios are what to compare. The servers are measured in rounds, the order
rotated each round, and each figure against plain is a ratio taken within one
round (the same addresses, moments apart); the median over the rounds is the
figure held to the goals, so that load arriving from elsewhere during one
round does not decide the result (a pooled percentile over every round mixes
rounds measured under different load). In the saturating rounds latency
includes queueing behind the other connections (p50 ~ connections /
throughput), so their p50 ratio mostly restates the throughput loss.

Then (``--paced``, default 0.5) every server is offered the same fixed request
rate, that fraction of plain's saturated throughput, spread evenly over the
connections (a request is sent when due, or at once when the previous answer
came late). Each round opens new connections; their first answers
(:data:`PACED_WARMUP`) are not measured. The paced phase runs many short
rounds (``--paced-rounds``, default 20 over ``--paced-seconds``, default 15 s
per server): a few percent is resolved by the median of many per-round ratios,
and their quartiles are printed beside it, so the spread is visible.

Each saturating round also reads the server process's CPU time (user + system,
all threads, from ``/proc`` on Linux): CPU microseconds per request, the median
over the rounds. Measured in the server, between requests that pass through the
kernel, uvicorn and FastAPI, the middleware's code and data are no longer in the
CPU caches, so this is what it costs a deployment; the in-process figures,
called back to back with warm caches, come out several times lower.

With two or more usable CPUs the load generator runs on one and the servers on
the others (``--no-pin`` turns this off): otherwise the generator and the
server under load take turns on a CPU, and the scheduler's choices add to
every latency, differently in every round. The 451 answers of denied addresses
(about 2% of the sample) skip the application and are cheaper than plain's 200
for the same address: they are kept, as a deployment sees them, and are too
few to move a median.

No ``from __future__ import annotations``: FastAPI resolves the endpoint's
annotations at runtime, and its imports are local to ``build_app``.
"""

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import DEFAULT_SEED, environment, make_sample, print_environment

ROOT = Path(__file__).resolve().parent.parent

#: The benchmark's policy: a few embargoes, a routed region, anonymisers flagged.
#: Not a compliance policy (see data/policies/ for those).
POLICY = """
[policy]
id = "bench-middleware"
version = "2026-01-01"
default = "allow"
on_unresolved = "review"
on_unknown = "review"
on_reserved = "allow"

[[rules]]
id = "embargo"
action = "deny"
jurisdictions = ["CU", "IR", "KP", "RU", "BY"]

[[rules]]
id = "eu-tier"
action = "route:eu-tier"
jurisdictions = ["@EU"]

[[rules]]
id = "anonymisers"
action = "review"
kinds = ["vpn", "tor", "public_proxy"]
"""

SAMPLE_SIZE = 20_000
MODES = ("plain", "geofence")

#: The HTTP servers measured in one run: name -> (app mode, audit lines).
SERVERS = {
    "plain": ("plain", False),
    "audited": ("geofence", True),
    "unaudited": ("geofence", False),
    "plain-b": ("plain", False),
}

#: The A/A control: a second plain server, measured like the others. Its ratio to
#: plain shows, in the same run, how finely the method resolves a difference.
CONTROL = "plain-b"

#: The issue's goals for the paced p50 against the plain app, per server.
PACED_GOALS = {"audited": 1.05, "unaudited": 1.03}

#: Requests per connection answered before a paced round measures (each round connects anew).
PACED_WARMUP = 2


# --------------------------------------------------------------------------- server side


def build_app(mode: str, *, audit: bool = True) -> object:
    """The FastAPI application served in one mode."""
    from fastapi import FastAPI, Request

    app = FastAPI()

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, str]:
        route = getattr(request.state, "geofence_route", None)
        return {"model": "demo", "tier": route or "default"}

    if mode == "geofence":
        from geofence.engine import Geofence
        from geofence.integrations import AuditLogger
        from geofence.integrations.asgi import GeofenceMiddleware
        from geofence.policy import parse_policy

        app.add_middleware(
            GeofenceMiddleware,
            geofence=Geofence(policy=parse_policy(POLICY)),
            trusted_proxies=["127.0.0.1"],
            audit=AuditLogger(_audit_logger("geofence.audit.bench")) if audit else None,
        )
    return app


def _audit_logger(name: str) -> logging.Logger:
    """A logger that formats and writes audit lines as production would, to os.devnull."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        logger.addHandler(logging.StreamHandler(sink))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def serve(mode: str, port: int, *, audit: bool, cpus: set[int] | None = None) -> None:
    """Run uvicorn in this process (the subprocess side), on ``cpus`` if given.

    The affinity is set before any thread starts, so the audit listener thread
    inherits it.
    """
    import uvicorn

    if cpus:
        os.sched_setaffinity(0, cpus)

    uvicorn.run(
        build_app(mode, audit=audit),  # type: ignore[arg-type]  # a FastAPI app is an ASGI app
        host="127.0.0.1",
        port=port,
        proxy_headers=False,  # geofence reads X-Forwarded-For itself, from 127.0.0.1 only
        access_log=False,
        log_level="warning",
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_plan() -> tuple[set[int], set[int]] | None:
    """(load generator's CPUs, servers' CPUs), disjoint; ``None`` below 2 usable CPUs.

    The load generator and the server under load then never take turns on one
    CPU, which otherwise adds the scheduler's decisions to every latency. Only
    one server is under load at a time, so they may share theirs.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    if len(cpus) < 2:
        return None
    return {cpus[0]}, set(cpus[1:])


def start_server(
    mode: str, *, audit: bool, cpus: set[int] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, __file__, "--serve", mode, "--port", str(port)]
    if not audit:
        command.append("--no-audit")
    if cpus:
        command += ["--cpus", ",".join(map(str, sorted(cpus)))]
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"the {mode} server did not start on port {port}") from None
            time.sleep(0.05)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --------------------------------------------------------------------------- load generator


@dataclass
class Run:
    """What one load run measured."""

    mode: str
    seconds: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    cpu_seconds: float | None = None
    """CPU seconds the server used during the run (all its threads), if known."""

    @property
    def requests(self) -> int:
        """Requests measured."""
        return len(self.latencies_ns)

    def percentile_us(self, q: float) -> float:
        """The ``q`` quantile of the latencies, in microseconds."""
        ordered = sorted(self.latencies_ns)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def _request(address: str) -> bytes:
    return (
        "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-Forwarded-For: {address}\r\nUser-Agent: geofence-bench\r\n\r\n"
    ).encode("ascii")


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length framed); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise ValueError("chunked responses are not expected here")
    if length:
        await reader.readexactly(length)
    return status


@contextlib.asynccontextmanager
async def _connected(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A keep-alive connection to the server, closed on the way out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, int]:
    """Send one request, read its response: (status, nanoseconds from send to last byte)."""
    t0 = time.perf_counter_ns()
    writer.write(request)
    status = await _read_response(reader)
    return status, time.perf_counter_ns() - t0


async def _connection(
    port: int,
    requests: Sequence[bytes],
    start: int,
    step: int,
    deadline: float,
    warmup_until: float,
    run: Run,
) -> None:
    """Send requests back to back (one in flight) until the deadline."""
    i = start
    n = len(requests)
    async with _connected(port) as (reader, writer):
        while (now := time.perf_counter()) < deadline:
            status, elapsed = await _exchange(reader, writer, requests[i % n])
            if now >= warmup_until:
                run.latencies_ns.append(elapsed)
                run.statuses[status] += 1
            i += step


async def _paced_connection(
    port: int,
    requests: Sequence[bytes],
    start: int,
    step: int,
    interval: float,
    phase: float,
    deadline: float,
    run: Run,
) -> None:
    """Send one request every ``interval`` seconds (or at once when behind schedule)."""
    i = start
    n = len(requests)
    sent = 0
    async with _connected(port) as (reader, writer):
        due = time.perf_counter() + phase
        while due < deadline:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status, elapsed = await _exchange(reader, writer, requests[i % n])
            sent += 1
            if sent > PACED_WARMUP:  # a new connection's first answers are not measured
                run.latencies_ns.append(elapsed)
                run.statuses[status] += 1
            i += step
            due += interval


async def paced_load(
    run: Run,
    port: int,
    requests: Sequence[bytes],
    seconds: float,
    rate: float,
    conns: int,
    offset: int,
) -> None:
    """Offer ``rate`` requests/s in total, spread evenly over ``conns`` connections."""
    interval = conns / rate
    begin = time.perf_counter()
    deadline = begin + seconds
    tasks = [
        _paced_connection(
            port, requests, offset + k, conns, interval, k * interval / conns, deadline, run
        )
        for k in range(conns)
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    run.seconds += time.perf_counter() - begin
    run.errors.extend(f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException))


async def load(
    run: Run,
    port: int,
    requests: Sequence[bytes],
    seconds: float,
    warmup: float,
    conns: int,
    offset: int,
) -> None:
    """One round of load on one server; measurements are added to ``run``."""
    begin = time.perf_counter()
    warmup_until = begin + warmup
    deadline = warmup_until + seconds
    tasks = [
        _connection(port, requests, offset + k, conns, deadline, warmup_until, run)
        for k in range(conns)
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    run.seconds += time.perf_counter() - warmup_until
    run.errors.extend(f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException))


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, all its threads (Linux ``/proc``), else ``None``."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def check_statuses(run: Run) -> None:
    """Record statuses the mode cannot produce as errors."""
    allowed = {200} if SERVERS[run.mode][0] == "plain" else {200, 451}
    for status, count in run.statuses.items():
        if status not in allowed:
            run.errors.append(f"{count} responses with unexpected status {status}")


# --------------------------------------------------------------------------- report


#: The issue's goals for the gate's own work, in ns of request-thread CPU per check.
GATE_GOALS = {"new": 4000.0, "repeat": 2000.0, "audited": 3000.0}


@dataclass
class GateCosts:
    """Request-thread CPU ns per call, measured in one run (best of three passes)."""

    mix: Counter[str]
    decide: float
    new: float
    repeat: float
    audited: float
    audited_share: float


def gate_costs(addresses: Sequence[str]) -> GateCosts:
    """``decide()`` and ``Gate.check`` in one run: new and repeat clients, audited decisions.

    Every check resolves the client from ``X-Forwarded-For`` behind a trusted
    127.0.0.1, decides and builds the verdict. ``new``: every client new (client
    cache misses, as in the HTTP run); ``repeat``: clients seen before; both
    without audit lines. ``audited``: repeat clients whose decisions are audited
    (deny, route, review), with the audit queue on: the time is the request
    thread's own CPU (``time.thread_time_ns``), the formatting and writing done
    by the listener thread is not in it.
    """
    from geofence.engine import Geofence
    from geofence.integrations import AuditLogger, Gate, GeofenceConfig, flush_audit_queue
    from geofence.policy import parse_policy

    engine = Geofence(policy=parse_policy(POLICY))
    mix = Counter(engine.decide(a).action.value for a in addresses)
    headers = [
        [(b"host", b"127.0.0.1"), (b"x-forwarded-for", a.encode()), (b"user-agent", b"bench")]
        for a in addresses
    ]
    audited_headers = [h for h, a in zip(headers, addresses, strict=True)
                       if engine.decide(a).action.value != "allow"]  # fmt: skip

    def gate(audit: bool) -> Gate:
        logger = _audit_logger("geofence.audit.bench-inproc")
        config = GeofenceConfig.from_options(
            trusted_proxies=["127.0.0.1"], audit=AuditLogger(logger) if audit else None
        )
        return Gate(engine, config, integration="bench")

    def checks(g: Gate, batch: Sequence[list[tuple[bytes, bytes]]]) -> float:
        t0 = time.thread_time_ns()
        for h in batch:
            g.check(kind="http", method="GET", path="/", peer="127.0.0.1", headers=h, native=None)
        return (time.thread_time_ns() - t0) / len(batch)

    def best(batch: Sequence[list[tuple[bytes, bytes]]], *, warm: bool, audit: bool) -> float:
        runs = []
        for _ in range(3):
            g = gate(audit)
            if warm:  # twice: the client cache admits a client on its second request
                checks(g, batch)
                checks(g, batch)
            runs.append(checks(g, batch))
            flush_audit_queue(60.0)
        return min(runs)

    def decide_ns() -> float:
        runs = []
        decide = engine.decide
        for _ in range(3):
            t0 = time.thread_time_ns()
            for a in addresses:
                decide(a)
            runs.append((time.thread_time_ns() - t0) / len(addresses))
        return min(runs)

    costs = GateCosts(
        mix=mix,
        decide=decide_ns(),
        new=best(headers, warm=False, audit=False),
        repeat=best(headers[:4000], warm=True, audit=False),
        audited=best(audited_headers[:4000], warm=True, audit=True),
        audited_share=len(audited_headers) / len(headers),
    )
    engine.close()
    return costs


def construction_costs() -> dict[str, float]:
    """Nanoseconds to build one per-request value object, three ways (best of five passes).

    ``ClientAddress`` as it is now (a plain slotted class, built positionally),
    the same fields in a frozen slotted dataclass (``__init__`` pays
    ``object.__setattr__`` per field), and that frozen class filled through its
    slot descriptors (the trick this replaced).
    """
    from dataclasses import dataclass, fields

    from geofence.addr import parse_address
    from geofence.signals.proxy import ClientAddress, ClientSource

    @dataclass(frozen=True, slots=True)
    class Frozen:
        address: object
        text: str
        source: object
        chain: tuple[str, ...] = ()
        signals: tuple[object, ...] = ()

    set_address, set_text, set_source, set_chain, set_signals = (
        Frozen.__dict__[f.name].__set__ for f in fields(Frozen)
    )
    new = object.__new__

    def described(address: object, text: str, source: object, chain: tuple[str, ...]) -> Frozen:
        # As the replaced helpers did it: one descriptor call per slot, unrolled.
        obj: Frozen = new(Frozen)
        set_address(obj, address)
        set_text(obj, text)
        set_source(obj, source)
        set_chain(obj, chain)
        set_signals(obj, ())
        return obj

    address, source, chain = parse_address("192.0.2.1"), ClientSource.X_FORWARDED_FOR, ("a",)
    makers: dict[str, Callable[[], object]] = {
        "plain slotted": lambda: ClientAddress(address, "192.0.2.1", source, chain),
        "frozen dataclass": lambda: Frozen(address, "192.0.2.1", source, chain, ()),
        "descriptor setters": lambda: described(address, "192.0.2.1", source, chain),
    }
    out = {}
    n = 100_000
    for name, make in makers.items():
        runs = []
        for _ in range(5):
            t0 = time.thread_time_ns()
            for _ in range(n):
                make()
            runs.append((time.thread_time_ns() - t0) / n)
        out[name] = min(runs)
    return out


def audit_cost(addresses: Sequence[str]) -> tuple[int, float, float]:
    """Request-thread CPU ns per audit line: building the JSON, and recording it.

    Returns:
        How many decisions are audited, ns per ``AuditLogger.line`` (the JSON
        alone, which the listener thread now builds) and ns per
        ``AuditLogger.record`` on the request thread (the record and its
        fields, put on the audit queue), best of three passes.
    """
    from geofence.engine import Geofence
    from geofence.integrations import AuditLogger, Gate, GeofenceConfig, flush_audit_queue
    from geofence.policy import parse_policy

    engine = Geofence(policy=parse_policy(POLICY))
    config = GeofenceConfig.from_options(trusted_proxies=["127.0.0.1"])
    gate = Gate(engine, config, integration="bench")
    audit = AuditLogger(_audit_logger("geofence.audit.bench-lines"))
    audited = []
    for a in addresses:
        verdict = gate.check(
            kind="http",
            method="GET",
            path="/v1/models",
            peer="127.0.0.1",
            headers=[(b"x-forwarded-for", a.encode())],
            native=None,
        )
        if verdict.decision is not None and audit._event(verdict.decision) is not None:
            audited.append((verdict.decision, verdict.client))
    engine.close()
    if not audited:
        return 0, float("nan"), float("nan")

    def best(one: Callable[[Any, Any], object]) -> float:
        runs = []
        for _ in range(3):
            t0 = time.thread_time_ns()
            for decision, client in audited:
                one(decision, client)
            runs.append((time.thread_time_ns() - t0) / len(audited))
            flush_audit_queue(60.0)
        return min(runs)

    extra = {"event": "route", "status": None, "path": "/v1/models", "method": "GET"}
    line_ns = best(lambda d, c: audit.line(d, c.text, extra))
    record_ns = best(
        lambda d, c: audit.record(
            d, client=c, integration="asgi", kind="http", method="GET", path="/v1/models"
        )
    )
    return len(audited), line_ns, record_ns


def asgi_cost(addresses: Sequence[str], *, audit: bool) -> dict[str, float]:
    """CPU ns per request of each mode's app called in-process (no server, no network).

    Less exposed to other load on the machine than the HTTP figures: the
    difference is the middleware's own cost per request.
    """
    apps = {mode: build_app(mode, audit=audit) for mode in MODES}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        return None

    def scope(address: str) -> dict[str, object]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/v1/models",
            "raw_path": b"/v1/models",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"x-forwarded-for", address.encode()),
                (b"user-agent", b"geofence-bench"),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }

    async def drive(app: object, batch: Sequence[str]) -> float:
        call = app  # an ASGI callable
        t0 = time.process_time_ns()
        for address in batch:
            await call(scope(address), receive, send)  # type: ignore[operator]
        return (time.process_time_ns() - t0) / len(batch)

    async def run() -> dict[str, float]:
        best = {mode: float("inf") for mode in MODES}
        for mode in MODES:
            await drive(apps[mode], addresses[:500])  # warm-up
        for _ in range(3):
            for mode in MODES:
                best[mode] = min(best[mode], await drive(apps[mode], addresses))
        return best

    return asyncio.run(run())


# --------------------------------------------------------------------------- instructions

#: Requests each server answers before and during the counted part (--instructions).
COUNT_WARMUP = 50


def _sync_exchange(sock: socket.socket, reader: Any, request: bytes) -> int:
    """Send one request on a blocking socket and read its response; return the status."""
    sock.sendall(request)
    status = int(reader.readline()[9:12])
    length = 0
    while True:
        line = reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    reader.read(length)
    return status


def _instructions(mode: str, requests: Sequence[bytes], *, audit: bool) -> int:
    """Instructions a server process executes (callgrind) for its whole life."""
    import re
    import tempfile

    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONHASHSEED"] = "0"  # the same dict layouts in every run: repeatable counts
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={tmp}/callgrind.out",
            sys.executable,
            __file__,
            "--serve",
            mode,
            "--port",
            str(port),
        ]
        if not audit:
            command.append("--no-audit")
        log_path = Path(tmp) / "valgrind.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
            try:
                deadline = time.monotonic() + 600
                while True:
                    try:
                        sock = socket.create_connection(("127.0.0.1", port), timeout=600)
                        break
                    except OSError:
                        if process.poll() is not None or time.monotonic() > deadline:
                            raise SystemExit(
                                f"the {mode} server did not start under valgrind"
                            ) from None
                        time.sleep(0.2)
                with sock, sock.makefile("rb") as reader:
                    for request in requests:
                        status = _sync_exchange(sock, reader, request)
                        if status not in ((200,) if mode == "plain" else (200, 451)):
                            raise SystemExit(f"{mode}: unexpected status {status}")
            finally:
                process.send_signal(2)  # SIGINT: uvicorn shuts down, callgrind writes out
                process.wait(timeout=600)
        found = re.search(rb"Collected : (\d+)", log_path.read_bytes())
        if found is None:
            raise SystemExit(f"no instruction count from valgrind for {mode}")
        return int(found.group(1))


def instruction_counts(addresses: Sequence[str], counted: int, *, audit: bool) -> int:
    """Print instructions per request of each mode's server, counted by callgrind.

    Deterministic where timings are noisy: each server runs under valgrind
    twice, answering ``COUNT_WARMUP`` requests and then none or ``counted``
    more on one keep-alive connection; the difference divided by ``counted``
    is what one request costs the process (HTTP parsing, the event loop, the
    framework, the middleware, its audit lines). Needs ``valgrind``; slow
    (~50x), so the request counts are small.
    """
    import shutil

    if shutil.which("valgrind") is None:
        print("valgrind is not installed: no instruction counts", file=sys.stderr)
        return 1
    requests = [_request(a) for a in addresses[: COUNT_WARMUP + counted]]
    per_request: dict[str, float] = {}
    for mode in MODES:
        base = _instructions(mode, requests[:COUNT_WARMUP], audit=audit)
        full = _instructions(mode, requests, audit=audit)
        per_request[mode] = (full - base) / counted
        print(f"{mode:10s} {per_request[mode]:>12,.0f} instructions per request")
    added = per_request["geofence"] - per_request["plain"]
    print(
        f"instructions: the middleware adds {added:,.0f} per request, "
        f"x{per_request['geofence'] / per_request['plain']:.3f} (geofence / plain; "
        f"{counted:,} requests on one connection, every one a new client; audit lines "
        f"{'on' if audit else 'off'})"
    )
    return 0


def report(run: Run) -> None:
    rate = run.requests / run.seconds if run.seconds else 0.0
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(run.statuses.items()))
    print(
        f"{run.mode:<9} {run.requests:>8,} requests  {rate:>9,.0f} req/s  "
        f"p50 {run.percentile_us(0.50):>8,.0f} µs  p99 {run.percentile_us(0.99):>8,.0f} µs  "
        f"({statuses}; errors: {len(run.errors)})"
    )


@dataclass
class Rounds:
    """One server's runs, a run per round."""

    name: str
    runs: list[Run] = field(default_factory=list)

    def add(self, run: Run) -> None:
        """Add a round's run (its statuses checked)."""
        check_statuses(run)
        self.runs.append(run)

    def pooled(self) -> Run:
        """Every round's requests as one run."""
        out = Run(self.name)
        for run in self.runs:
            out.seconds += run.seconds
            out.latencies_ns.extend(run.latencies_ns)
            out.statuses.update(run.statuses)
            out.errors.extend(run.errors)
        return out

    def rate(self) -> float:
        """Requests per second over every round."""
        pooled = self.pooled()
        return pooled.requests / pooled.seconds if pooled.seconds else 0.0

    def ratios(self, base: "Rounds", q: float = 0.5) -> list[float]:
        """Per round: this server's ``q`` quantile over ``base``'s in the same round."""
        return [
            run.percentile_us(q) / other.percentile_us(q)
            for run, other in zip(self.runs, base.runs, strict=True)
        ]

    def median_ratio(self, base: "Rounds", q: float = 0.5) -> float:
        """The median over the rounds of :meth:`ratios`."""
        return statistics.median(self.ratios(base, q))

    def cpu_us(self) -> float | None:
        """The median over the rounds of the server's CPU microseconds per request."""
        per_request = [
            run.cpu_seconds / run.requests * 1e6
            for run in self.runs
            if run.cpu_seconds is not None and run.requests
        ]
        return statistics.median(per_request) if per_request else None

    def spread(self, base: "Rounds", q: float = 0.5) -> tuple[float, float]:
        """The quartiles (25th, 75th percentile) over the rounds of :meth:`ratios`."""
        ratios = self.ratios(base, q)
        if len(ratios) < 2:
            return ratios[0], ratios[0]
        low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
        return low, high


def rotated(names: Sequence[str], n: int) -> list[str]:
    """Round ``n``'s order of the servers: rotated, and reversed every other round.

    Rotation lets every server go first equally often; reversal lets each
    server follow every other as often as precede it, so that whatever one
    server leaves behind on the machine (caches, the scheduler's state) falls
    on its neighbours alike.
    """
    k = (n // 2) % len(names)
    order = [*names[k:], *names[:k]]
    return order if n % 2 == 0 else order[::-1]


def report_rounds(phase: str, rounds: dict[str, Rounds]) -> list[tuple[str, str]]:
    """Print each server's pooled figures and its per-round ratios to plain; return errors.

    The ratio of a round compares two servers measured minutes apart at most, on
    the same addresses, so a change of load on the machine between rounds moves
    both; the median over the rounds is the figure the goals are held to.
    """
    failures: list[tuple[str, str]] = []
    plain = rounds["plain"]
    for name, server in rounds.items():
        pooled = server.pooled()
        report(pooled)
        failures += [(name, e) for e in pooled.errors]
        if not pooled.requests:
            failures.append((name, "no request completed"))
        if name != "plain":
            per_round = ", ".join(f"{r:.2f}" for r in server.ratios(plain))
            low, high = server.spread(plain)
            print(
                f"{phase} {name} / plain: p50 x{server.median_ratio(plain):.3f} (median of "
                f"{len(server.runs)} rounds, quartiles x{low:.3f}-x{high:.3f}; rounds: "
                f"{per_round}), p99 x{server.median_ratio(plain, 0.99):.3f}, "
                f"throughput x{server.rate() / plain.rate():.3f}"
            )
        cpu, plain_cpu = server.cpu_us(), plain.cpu_us()
        if cpu is not None and plain_cpu is not None:
            print(
                f"{phase} {name}: server CPU {cpu:,.1f} µs per request (median of rounds, all "
                f"threads; +{cpu - plain_cpu:,.1f} µs, x{cpu / plain_cpu:.3f} of plain)"
            )
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per mode")
    parser.add_argument("--smoke", action="store_true", help="1 s per mode (CI)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved saturating rounds per server"
    )
    parser.add_argument(
        "--paced-seconds",
        type=float,
        default=15.0,
        help="measured seconds per server at the paced rate (default 15)",
    )
    parser.add_argument(
        "--paced-rounds",
        type=int,
        default=20,
        help="interleaved paced rounds per server (default 20: short rounds, so that "
        "the median of the per-round ratios resolves a few percent)",
    )
    parser.add_argument(
        "--no-control",
        action="store_true",
        help=f"leave out the A/A control ({CONTROL}, a second plain server)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the load generator and the servers to different CPUs",
    )
    parser.add_argument(
        "--paced",
        type=float,
        default=0.5,
        help="after the saturating rounds, offer this fraction of plain's measured "
        "throughput to both modes at a fixed rate and compare latency (0: skip)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=SAMPLE_SIZE,
        help=f"distinct client addresses, cycled (default {SAMPLE_SIZE:,}: every request "
        "a new client for the middleware's resolution cache, the worst case)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="address sample seed")
    parser.add_argument(
        "--no-audit", action="store_true", help="no audit lines (default: written to devnull)"
    )
    parser.add_argument(
        "--instructions",
        type=int,
        nargs="?",
        const=1000,
        metavar="N",
        help="instead of timing: count instructions per request of each server under "
        "valgrind's callgrind over N requests (default 1000)",
    )
    parser.add_argument("--serve", choices=("plain", "geofence"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cpus", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        cpus = {int(c) for c in args.cpus.split(",")} if args.cpus else None
        serve(args.serve, args.port, audit=not args.no_audit, cpus=cpus)
        return 0
    seconds = 1.0 if args.smoke else args.seconds
    paced_seconds = 2.0 if args.smoke else args.paced_seconds
    paced_rounds = 4 if args.smoke else args.paced_rounds
    warmup = 0.3 if args.smoke else 1.0
    if seconds <= 0 or paced_seconds <= 0 or args.connections < 1:
        parser.error("--seconds and --paced-seconds must be > 0, --connections >= 1")
    if args.rounds < 1 or paced_rounds < 1:
        parser.error("--rounds and --paced-rounds must be >= 1")
    if not 0 <= args.paced < 1:
        parser.error("--paced must be in [0, 1)")
    if not 1 <= args.clients <= SAMPLE_SIZE:
        parser.error(f"--clients must be between 1 and {SAMPLE_SIZE}")
    conns = args.connections

    from geofence.snapshot.reader import Snapshot

    print_environment(environment(("fastapi", "starlette", "uvicorn")))
    sample = make_sample(Snapshot.default(), SAMPLE_SIZE, seed=args.seed)
    audit = not args.no_audit
    if args.instructions is not None:
        if not 1 <= args.instructions <= SAMPLE_SIZE - COUNT_WARMUP:
            parser.error(f"--instructions must be between 1 and {SAMPLE_SIZE - COUNT_WARMUP}")
        print(f"# sample: {sample.describe()}")
        return instruction_counts(sample.addresses, args.instructions, audit=audit)
    print(f"# sample: {sample.describe()}; {args.clients:,} used as clients")
    costs = gate_costs(sample.addresses)
    shares = ", ".join(f"{k} {v / len(sample.addresses):.1%}" for k, v in costs.mix.most_common())
    print(f"# decisions on the sample: {shares}")
    from geofence import core_info

    print(
        f"# in process, request-thread CPU per call ({core_info()['core']} core): "
        f"decide() {costs.decide:,.0f} ns; Gate.check (resolve X-Forwarded-For + decide + "
        f"verdict) {costs.new:,.0f} ns per new client, {costs.repeat:,.0f} ns per repeat "
        f"client; audited decision ({costs.audited_share:.0%} of the sample, audit queue on) "
        f"{costs.audited:,.0f} ns"
    )
    met = {name: getattr(costs, name) <= goal for name, goal in GATE_GOALS.items()}
    print(
        "goal: Gate.check <= 4 µs per new client "
        f"({'met' if met['new'] else 'NOT met'}), <= 2 µs per repeat client "
        f"({'met' if met['repeat'] else 'NOT met'}), <= 3 µs on the request thread for an "
        f"audited decision ({'met' if met['audited'] else 'NOT met'})"
    )
    built = construction_costs()
    print(
        "# one ClientAddress per request (5 fields, incl. a lambda call each): "
        + ", ".join(f"{name} {ns:,.0f} ns" for name, ns in built.items())
    )
    audited, line_ns, record_ns = audit_cost(sample.addresses)
    print(
        f"# audit lines ({audited:,} audited decisions in the sample): {line_ns:,.0f} ns to "
        f"build the JSON (on the listener thread), {record_ns:,.0f} ns on the request thread "
        f"to record it (onto the audit queue)"
    )
    cost = asgi_cost(sample.addresses[: args.clients], audit=audit)
    print(
        f"# in-process ASGI call of the app (no network, CPU time): plain "
        f"{cost['plain'] / 1000:,.1f} µs, geofence {cost['geofence'] / 1000:,.1f} µs "
        f"(+{(cost['geofence'] - cost['plain']) / 1000:,.1f} µs, "
        f"x{cost['geofence'] / cost['plain']:.2f})"
    )
    requests = [_request(a) for a in sample.addresses[: args.clients]]
    names = [
        name
        for name in SERVERS
        if (audit or name != "audited") and (not args.no_control or name != CONTROL)
    ]
    plan = None if args.no_pin else cpu_plan()
    pinning = (
        f"load generator on CPU {sorted(plan[0])}, servers on CPU {sorted(plan[1])}"
        if plan
        else "not pinned"
    )
    print(
        f"# {conns} keep-alive connections, {seconds:g} s per server in {args.rounds} rounds "
        f"(order rotated and reversed by turns) after {warmup:g} s warm-up; uvicorn, 1 worker, "
        f"127.0.0.1; servers: {', '.join(names)} (audit lines through the audit queue, "
        f"written to devnull); {pinning}"
    )
    saturated = {name: Rounds(name) for name in names}
    paced = {name: Rounds(name) for name in names}
    paced_rate = 0.0
    own_cpus = os.sched_getaffinity(0) if plan else None
    servers = {
        name: start_server(SERVERS[name][0], audit=SERVERS[name][1], cpus=plan[1] if plan else None)
        for name in names
    }
    try:
        if plan:
            os.sched_setaffinity(0, plan[0])
        for name in names:  # warm every server up once
            asyncio.run(load(Run(name), servers[name][1], requests, 0.0, warmup, conns, 0))
        # Rounds with the order rotated, so that load from elsewhere on the machine
        # falls on every server alike; all see the same address sequence per round.
        for n in range(args.rounds):
            for name in rotated(names, n):
                run = Run(name)
                offset = n * conns * 997
                before = process_cpu_seconds(servers[name][0].pid)
                asyncio.run(
                    load(run, servers[name][1], requests, seconds / args.rounds, 0.0, conns, offset)
                )
                after = process_cpu_seconds(servers[name][0].pid)
                if before is not None and after is not None:
                    run.cpu_seconds = after - before
                saturated[name].add(run)
        plain_rps = saturated["plain"].rate()
        paced_rate = args.paced * plain_rps
        if args.paced > 0 and paced_rate > 0:
            per_round = paced_seconds / paced_rounds
            for n in range(paced_rounds):
                for name in rotated(names, n):
                    run = Run(name)
                    offset = n * conns * 991
                    asyncio.run(
                        paced_load(
                            run, servers[name][1], requests, per_round, paced_rate, conns, offset
                        )
                    )
                    paced[name].add(run)
    finally:
        if own_cpus:
            os.sched_setaffinity(0, own_cpus)
        for process, _ in servers.values():
            stop_server(process)
    failures = report_rounds("saturated", saturated)
    if paced_rate > 0:
        print(
            f"\n# paced: {paced_rate:,.0f} req/s offered to each server ({args.paced:g} x "
            f"plain's saturated throughput), {conns} connections, {paced_seconds:g} s per "
            f"server in {paced_rounds} rounds (order rotated and reversed by turns); latency "
            f"= send to last byte, the first {PACED_WARMUP} answers of each connection not "
            "measured; "
            f"{pinning}"
        )
        failures += report_rounds("paced", paced)
        goals = []
        for name, target in PACED_GOALS.items():
            if name in paced:
                ratio = paced[name].median_ratio(paced["plain"])
                low, high = paced[name].spread(paced["plain"])
                verdict = "met" if ratio <= target else "NOT met"
                goals.append(
                    f"{'with' if name == 'audited' else 'without'} audit lines x{ratio:.3f} "
                    f"(quartiles x{low:.3f}-x{high:.3f}) <= x{target:.2f} ({verdict})"
                )
        print("goal: paced p50 (median of the rounds' ratios) " + "; ".join(goals))
        if CONTROL in paced:
            ratio = paced[CONTROL].median_ratio(paced["plain"])
            low, high = paced[CONTROL].spread(paced["plain"])
            print(
                f"resolution: A/A control {CONTROL} / plain (identical servers) p50 "
                f"x{ratio:.3f}, quartiles x{low:.3f}-x{high:.3f}"
            )
        print(f"# load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, error in failures[:20]:
        print(f"ERROR [{name}] {error}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
