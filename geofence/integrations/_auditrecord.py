"""Log records of audit lines, made cheaply: their call site never changes.

:func:`make_record` gives what ``Logger.makeRecord`` gives for the audit call
site, without recomputing the file, module and process per record;
:class:`AuditMessage` is the record's message, the JSON line, built the first
time a handler formats it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping

from geofence.decision import Decision
from geofence.integrations._auditline import LineEncoder

__all__ = ["AuditMessage", "make_record"]


class AuditMessage:
    """A record's message: the JSON line, built when a handler first asks for it."""

    __slots__ = ("_address", "_at", "_decision", "_encoder", "_extra", "_text")

    def __init__(
        self,
        encoder: LineEncoder,
        decision: Decision,
        address: str | None,
        extra: Mapping[str, object],
        at: float,
    ) -> None:
        self._encoder = encoder
        self._decision = decision
        self._address = address
        self._extra = extra
        self._at = at
        self._text: str | None = None

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = self._text = self._encoder.line(
                self._decision, self._address, self._extra, at=self._at
            )
        return text

    def __repr__(self) -> str:
        return f"<AuditMessage {self._decision.action.value} {self._address}>"


def _constant_fields() -> dict[str, object]:
    """The LogRecord attributes every audit record shares (per process).

    ``relativeCreated`` is derived from a record ``logging`` makes itself, so
    audit records count from the same start as every other record.
    """
    probe = logging.LogRecord("geofence.audit", logging.INFO, __file__, 0, "", None, None)
    fields: dict[str, object] = {
        "args": None,
        "pathname": __file__,
        "filename": probe.filename,
        "module": probe.module,
        "exc_info": None,
        "exc_text": None,
        "stack_info": None,
        "lineno": 0,
        "funcName": "AuditLogger.record",
        "processName": probe.processName,
        "process": probe.process,
        "_start": probe.created - probe.relativeCreated / 1000.0,
    }
    if sys.version_info >= (3, 12):
        fields["taskName"] = None
    return fields


_CONSTANT = _constant_fields()
_START = float(_CONSTANT.pop("_start"))  # type: ignore[arg-type]  # a float, set above
_new = object.__new__
_current_thread = threading.current_thread


def make_record(
    name: str,
    level: int,
    levelname: str,
    message: AuditMessage,
    created: float,
    thread: threading.Thread | None = None,
) -> logging.LogRecord:
    """A ``LogRecord`` as ``Logger.makeRecord`` makes it, for the audit call site.

    The stdlib constructor recomputes the file name, module and process of the
    call site for every record; an audit record always comes from the same
    place, so those are computed once (``funcName`` is ``AuditLogger.record``,
    ``lineno`` 0). The attributes are the stdlib's (tested).

    Args:
        name: The logger's name.
        level: The record's level.
        levelname: The level's name.
        message: The message.
        created: Unix time of the record.
        thread: The thread the record is about (default: the calling thread);
            the listener thread makes records for the request threads.
    """
    record: logging.LogRecord = _new(logging.LogRecord)
    fields = record.__dict__
    fields.update(_CONSTANT)
    fields["name"] = name
    fields["msg"] = message
    fields["levelname"] = levelname
    fields["levelno"] = level
    fields["created"] = created
    fields["msecs"] = int(created * 1000) % 1000 + 0.0
    fields["relativeCreated"] = (created - _START) * 1000.0
    if logging.logThreads:
        if thread is None:
            thread = _current_thread()
        fields["thread"] = thread.ident
        fields["threadName"] = thread.name
    else:
        fields["thread"] = fields["threadName"] = None
    return record


def _reset_process_fields() -> None:
    _CONSTANT["process"] = os.getpid()


os.register_at_fork(after_in_child=_reset_process_fields)
