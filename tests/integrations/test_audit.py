"""Audit records: fields on the LogRecord, a hook for request ids, written off the request thread."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from geofence.decision import Action
from geofence.engine import Geofence
from geofence.integrations.audit import AuditLogger, flush_audit_queue, make_record
from geofence.integrations.config import GeofenceConfig
from geofence.integrations.gate import Gate
from geofence.integrations.request import RequestInfo
from tests.integrations.conftest import ADDR


class Keep(logging.Handler):
    """Keeps records and the thread that handled each."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.threads: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.threads.append(threading.get_ident())


@pytest.fixture
def kept() -> Iterator[tuple[logging.Logger, Keep]]:
    """A private audit logger (no propagation) with a keeping handler."""
    logger = logging.getLogger(f"geofence.audit.test-{id(object())}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = Keep()
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


def gate(engine: Geofence, audit: AuditLogger) -> Gate:
    return Gate(engine, GeofenceConfig.from_options(audit=audit), integration="test")


def check(g: Gate, peer: str, path: str = "/v1", **headers: str) -> Any:
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    return g.check(kind="http", method="POST", path=path, peer=peer, headers=pairs, native=None)


def test_fields_are_on_the_record(engine: Geofence, kept: tuple[logging.Logger, Keep]) -> None:
    """record.event/status/path/decision/address... and the message is the same line."""
    logger, handler = kept
    verdict = check(gate(engine, AuditLogger(logger)), ADDR["deny"], "/v1/chat")
    assert flush_audit_queue()
    (record,) = handler.records
    assert record.event == "deny"  # type: ignore[attr-defined]
    assert record.status == 451  # type: ignore[attr-defined]
    assert record.path == "/v1/chat"  # type: ignore[attr-defined]
    assert record.method == "POST"  # type: ignore[attr-defined]
    assert record.integration == "test"  # type: ignore[attr-defined]
    assert record.client_source == "peer"  # type: ignore[attr-defined]
    assert record.address == ADDR["deny"]  # type: ignore[attr-defined]
    assert record.decision is verdict.decision  # type: ignore[attr-defined]
    assert record.thread == threading.get_ident()  # the request's thread, not the listener's
    assert record.threadName == threading.current_thread().name
    assert handler.threads != [threading.get_ident()]
    line = json.loads(record.getMessage())
    assert line["event"] == "deny"
    assert line["status"] == 451
    assert line["address"] == ADDR["deny"]
    assert line["rule_id"] == "deny-cu"
    assert line["ts"] == round(record.created, 3)
    assert str(record.msg) is str(record.msg)  # built once, however many handlers format it


def test_records_are_written_off_the_request_thread(
    engine: Geofence, kept: tuple[logging.Logger, Keep]
) -> None:
    """A handler that blocks (a slow disk) does not block the request that was audited."""
    logger, handler = kept
    release = threading.Event()

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            release.wait(10)

    slow = Slow()
    logger.addHandler(slow)
    try:
        g = gate(engine, AuditLogger(logger))
        for _ in range(3):  # each would wait 10 s if written on this thread
            assert check(g, ADDR["deny"]).reply.status == 451
        assert not flush_audit_queue(timeout=0.05)  # still held up by the slow handler
        release.set()
        assert flush_audit_queue()
    finally:
        logger.removeHandler(slow)
    assert len(handler.records) == 3
    assert threading.get_ident() not in handler.threads


def test_queue_off_writes_on_the_calling_thread(
    engine: Geofence, kept: tuple[logging.Logger, Keep]
) -> None:
    """queue=False: the record is handled before check() returns, on this thread."""
    logger, handler = kept
    check(gate(engine, AuditLogger(logger, queue=False)), ADDR["deny"])
    assert len(handler.records) == 1
    assert handler.threads == [threading.get_ident()]


def test_fields_hook_adds_request_id_and_tenant(
    engine: Geofence, kept: tuple[logging.Logger, Keep]
) -> None:
    """The hook's fields go on the record and into the line, also on the fast path's clients."""
    logger, handler = kept

    def fields(request: RequestInfo) -> dict[str, object]:
        return {
            "request_id": request.headers.get("x-request-id"),
            "tenant": request.headers.get("x-tenant"),
        }

    g = gate(engine, AuditLogger(logger, fields=fields))
    check(g, ADDR["route"], x_request_id="req-42", x_tenant="acme")
    check(g, ADDR["allow"], x_request_id="req-43")  # an allow: no line, no hook call needed
    assert flush_audit_queue()
    (record,) = handler.records
    assert record.request_id == "req-42"  # type: ignore[attr-defined]
    assert record.tenant == "acme"  # type: ignore[attr-defined]
    line = json.loads(record.getMessage())
    assert line["request_id"] == "req-42"
    assert line["tenant"] == "acme"
    assert line["action"] == "route"


def test_fields_hook_failures_and_reserved_names(
    engine: Geofence, kept: tuple[logging.Logger, Keep], caplog: pytest.LogCaptureFixture
) -> None:
    """A failing hook or a reserved name is logged; the line is still written."""
    logger, handler = kept

    def failing(request: RequestInfo) -> dict[str, object]:
        raise RuntimeError("no request id")

    with caplog.at_level(logging.ERROR, logger="geofence"):
        check(gate(engine, AuditLogger(logger, fields=failing)), ADDR["deny"])
        check(gate(engine, AuditLogger(logger, fields=lambda r: {"msg": "x"})), ADDR["deny"])
        check(gate(engine, AuditLogger(logger, fields=lambda r: {"path": "/x"})), ADDR["deny"])
    assert flush_audit_queue()
    assert len(handler.records) == 3
    assert "fields hook failed" in caplog.text
    assert "'msg' is a reserved name" in caplog.text
    assert "'path' is a reserved name" in caplog.text
    assert json.loads(handler.records[2].getMessage())["path"] == "/v1"
    with pytest.raises(ValueError, match="fields"):
        AuditLogger(fields="request_id")  # type: ignore[arg-type]


def test_made_record_has_the_stdlib_attributes() -> None:
    """make_record gives the attributes Logger.makeRecord gives, and formats alike."""
    logger = logging.getLogger("geofence.audit.attrs")
    ours = make_record(logger.name, logging.INFO, "INFO", "message", 1_700_000_000.25)  # type: ignore[arg-type]
    theirs = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "message", (), None)
    assert set(ours.__dict__) == set(theirs.__dict__)
    assert ours.created == 1_700_000_000.25
    assert ours.msecs == 250.0
    assert ours.funcName == "AuditLogger.record"
    assert ours.thread == threading.get_ident()
    assert ours.process == theirs.process
    fmt = logging.Formatter(
        "%(asctime)s %(name)s %(levelname)s %(process)d %(threadName)s %(module)s "
        "%(funcName)s %(relativeCreated)d %(message)s"
    )
    assert fmt.format(ours).endswith(" message")
    assert ours.relativeCreated == pytest.approx(
        theirs.relativeCreated - (theirs.created - ours.created) * 1000.0, abs=1.0
    )


def test_many_threads_every_line_arrives(
    engine: Geofence, kept: tuple[logging.Logger, Keep]
) -> None:
    """Eight threads auditing through one gate: every line is written once, none mixed up."""
    logger, handler = kept
    g = gate(engine, AuditLogger(logger))
    rounds = 200

    def work(offset: int) -> None:
        for i in range(rounds):
            check(g, ADDR["deny"] if (i + offset) % 2 else ADDR["route"], f"/t{offset}/{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert flush_audit_queue()
    lines = [json.loads(r.getMessage()) for r in handler.records]
    assert len(lines) == 8 * rounds
    assert len({line["path"] for line in lines}) == 8 * rounds
    for line in lines:
        expected = "deny" if line["address"] == ADDR["deny"] else "route"
        assert line["action"] == expected == line["event"]
    assert {Action(line["action"]) for line in lines} == {Action.DENY, Action.ROUTE}


_FORK_SCRIPT = """
import logging, os, sys
from geofence.decision import Action, Decision
from geofence.integrations.audit import AuditLogger, flush_audit_queue

path = sys.argv[1]
logger = logging.getLogger("geofence.audit.fork")
logger.setLevel(logging.INFO)
logger.propagate = False
logger.addHandler(logging.FileHandler(path))
audit = AuditLogger(logger)
deny = Decision(action=Action.DENY, reasons=("rule:x",))
audit.record(deny, client=None, path="/parent")  # the parent's listener starts
assert flush_audit_queue()
pid = os.fork()  # as gunicorn --preload forks its workers
if pid == 0:
    audit.record(deny, client=None, path="/child")
    os._exit(0 if flush_audit_queue() else 3)
_, status = os.waitpid(pid, 0)
audit.record(deny, client=None, path="/parent-again")
assert flush_audit_queue()
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_worker_writes_its_own_lines(tmp_path: Any) -> None:
    """After a fork the child starts its own listener: its lines are written, none lost."""
    import subprocess
    import sys

    lines = tmp_path / "audit.log"
    result = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, str(lines)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    paths = sorted(json.loads(line)["path"] for line in lines.read_text().splitlines())
    assert paths == ["/child", "/parent", "/parent-again"]


def test_records_name_the_deciding_thread(
    engine: Geofence, kept: tuple[logging.Logger, Keep]
) -> None:
    """A line decided on a named worker thread carries that thread's ident and name."""
    logger, handler = kept
    g = gate(engine, AuditLogger(logger))
    worker = threading.Thread(target=check, args=(g, ADDR["deny"]), name="request-worker-7")
    worker.start()
    worker.join()
    assert flush_audit_queue()
    (record,) = handler.records
    assert (record.thread, record.threadName) == (worker.ident, "request-worker-7")
    assert handler.threads != [worker.ident]


def test_make_record_for_another_thread() -> None:
    """make_record(thread=...) names that thread; logThreads off leaves both None."""
    worker = threading.Thread(target=lambda: None, name="decider")
    worker.start()
    worker.join()
    record = make_record("n", logging.INFO, "INFO", "m", 1.0, worker)  # type: ignore[arg-type]
    assert (record.thread, record.threadName) == (worker.ident, "decider")
    saved = logging.logThreads
    logging.logThreads = False
    try:
        record = make_record("n", logging.INFO, "INFO", "m", 1.0, worker)  # type: ignore[arg-type]
    finally:
        logging.logThreads = saved
    assert (record.thread, record.threadName) == (None, None)
