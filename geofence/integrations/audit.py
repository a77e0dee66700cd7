"""Audit lines: one JSON line per decision worth keeping, off the request thread.

:class:`AuditLogger` decides which decisions are written (every non-allow,
shadow and degraded decision; a sample of allows) and puts the decision and
the request's fields on a queue. A listener thread makes the log record, with
the line's fields on it (``record.event``, ``record.path``,
``record.decision``...), and passes it to the ``geofence.audit`` logger's
handlers, where the message, the JSON line, is built the first time a handler
formats it. A slow disk or log shipper then never blocks a request
(``queue=False`` does all of it on the calling thread instead).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from geofence.decision import Action, Decision
from geofence.integrations import _auditqueue
from geofence.integrations._auditline import LineEncoder
from geofence.integrations._auditqueue import flush_audit_queue
from geofence.integrations._auditrecord import AuditMessage, make_record

if TYPE_CHECKING:
    from geofence.integrations.request import AuditFieldsHook, RequestInfo
    from geofence.signals.proxy import ClientAddress

__all__ = ["AuditLogger", "AuditMessage", "flush_audit_queue", "make_record"]

log = logging.getLogger("geofence")

#: LogRecord attributes an audit-fields hook may not overwrite.
RESERVED_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


_time = time.time
_current_thread = threading.current_thread

#: The names an audit line sets itself (a ``fields`` hook may not use them).
_LINE_FIELDS = frozenset(
    {
        "client_source", "client_chain", "client_signals", "event", "status", "integration",
        "kind", "method", "path", "decision", "address", "ts",
    }
)  # fmt: skip

#: What :meth:`AuditLogger.enqueue` queues: its writer, the decision, the
#: request's fields, times and the thread that decided (see :meth:`AuditLogger._write`).
_PendingLine = tuple[
    "Callable[[_PendingLine], None]", Decision, "ClientAddress | None", str, "int | None",
    str, str, str, str, float, float, threading.Thread, "dict[str, object] | None",
]  # fmt: skip


class AuditLogger:
    """Writes one JSON line per decision worth keeping to a stdlib logger.

    Logged: every decision whose action is not ``allow`` (deny, challenge,
    review, route), shadow-mode matches (``log_shadow``), degraded decisions
    (fail mode, engine errors), and a sample of plain allows. The message is
    exactly :meth:`Decision.to_json` with request fields added, so a line can be
    parsed back and re-checked against the policy and snapshot it names. The
    same fields are attributes of the log record (``record.event``,
    ``record.status``, ``record.path``, ``record.address``...), with the
    :class:`~geofence.decision.Decision` as ``record.decision``, for structured
    handlers.

    Args:
        logger: A logger or its name (default ``"geofence.audit"``).
        allow_sample_rate: Fraction of plain allows to log, 0.0 to 1.0.
        seed: Seed of the sampler, for reproducible samples in tests.
        level: Log level of the lines.
        log_shadow: Log allows on which a shadow-mode rule matched.
        actions: Actions always logged (default: every action but ``allow``).
            Decisions with other actions are sampled like allows; e.g. leave
            out ``"route"`` when most traffic is routed.
        fields: A hook ``(request) -> {name: value}`` adding fields (a request
            id, a tenant) to the line and the record; called only for lines
            that are written. Names of ``LogRecord`` attributes are refused.
        queue: Write through the process-wide queue and its listener thread
            (the default); ``False`` hands records to the logger on the
            calling thread.

    Raises:
        ValueError: ``allow_sample_rate`` is outside 0..1, an action is unknown,
            or ``fields`` is not callable.
    """

    __slots__ = (
        "_actions",
        "_always",
        "_encoder",
        "_fields",
        "_level",
        "_levelname",
        "_logger",
        "_queue",
        "_random",
        "_rate",
        "_shadow",
    )

    def __init__(
        self,
        logger: logging.Logger | str = "geofence.audit",
        *,
        allow_sample_rate: float = 0.0,
        seed: int | None = None,
        level: int = logging.INFO,
        log_shadow: bool = True,
        actions: Iterable[Action | str] = (
            Action.DENY,
            Action.CHALLENGE,
            Action.REVIEW,
            Action.ROUTE,
        ),
        fields: AuditFieldsHook | None = None,
        queue: bool = True,
    ) -> None:
        if not 0.0 <= allow_sample_rate <= 1.0:
            raise ValueError(f"allow_sample_rate must be between 0 and 1, got {allow_sample_rate}")
        if fields is not None and not callable(fields):
            raise ValueError(f"fields must be a callable (request) -> mapping, got {fields!r}")
        # A tuple, tested with ``in``: identity matches first.
        self._actions = tuple(dict.fromkeys(Action(a) for a in actions))
        # The same as a mapping to the event name: the request thread's first test.
        self._always = {action: action.value for action in self._actions}
        self._encoder = LineEncoder()
        self._logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self._rate = float(allow_sample_rate)
        # random.Random.random is a single C call: safe to share between threads.
        self._random = random.Random(seed).random
        self._level = level
        self._levelname = logging.getLevelName(level)
        self._shadow = log_shadow
        self._fields = fields
        self._queue = queue

    @property
    def logger(self) -> logging.Logger:
        """The logger lines go to."""
        return self._logger

    @property
    def enabled(self) -> bool:
        """Whether the logger takes lines at this level now (callers skip the work if not)."""
        return self._logger.isEnabledFor(self._level)

    @property
    def wants_request(self) -> bool:
        """Whether :meth:`record` needs the request (a fields hook is set)."""
        return self._fields is not None

    def _event(self, decision: Decision) -> str | None:
        """The event name of a decision, or ``None`` when it is not logged."""
        action = decision.action
        if action in self._actions:
            return action._value_
        if decision.degraded:
            return "degraded"
        if decision.shadow and self._shadow:
            return "shadow"
        rate = self._rate
        if rate > 0.0 and (rate >= 1.0 or self._random() < rate):
            return "sample"
        return None

    def record(
        self,
        decision: Decision,
        *,
        client: ClientAddress | None,
        request: RequestInfo | None = None,
        status: int | None = None,
        integration: str = "",
        kind: str = "http",
        method: str = "",
        path: str = "",
        at: float | None = None,
    ) -> None:
        """Log one decision if it is worth keeping (see the class docstring).

        Args:
            decision: The decision.
            client: The resolved client address.
            request: The request (given to the ``fields`` hook).
            status: Status of the reply sent instead of the application, or
                ``None`` when the request went on to the application.
            integration: Which integration decided (``"asgi"``, ``"wsgi"``...).
            kind: ``"http"`` or ``"websocket"``.
            method: HTTP method.
            path: Request path (never the query string: it may carry secrets).
            at: Unix time of the decision (default: now); for lines written
                after the response, so ``ts`` still says when it was decided.
        """
        self.enqueue(decision, client, request, status, integration, kind, method, path, at)

    def enqueue(
        self,
        decision: Decision,
        client: ClientAddress | None,
        request: RequestInfo | None,
        status: int | None,
        integration: str,
        kind: str,
        method: str,
        path: str,
        at: float | None = None,
    ) -> None:
        """:meth:`record` with positional arguments (the gate's call, once per request)."""
        # An action always logged is a dict lookup; the other cases go through _event.
        # The logger's level is asked only about lines that would be written.
        event = self._always.get(decision.action) or self._event(decision)
        if event is None or not self._logger.isEnabledFor(self._level):
            return
        fields = None
        if self._fields is not None and request is not None:
            fields = self._hook_fields(request)  # here: the request is this thread's
        now = _time()
        # The rest (fields, record, JSON) is built by whoever writes: the listener
        # thread, or this one with queue=False. Everything it reads is immutable;
        # the thread's identity and name are read from the thread object there.
        pending = (
            self._write, decision, client, event, status, integration, kind, method, path,
            now if at is None else at, now, _current_thread(), fields,
        )  # fmt: skip
        if self._queue:
            _auditqueue.QUEUE.put(pending)
        else:
            self._write(pending)

    def _write(self, pending: _PendingLine) -> None:
        """Make the log record of a line recorded by :meth:`record` and hand it to the logger."""
        (_, decision, client, event, status, integration, kind, method, path,
         at, created, thread, fields) = pending  # fmt: skip
        address: str | None = None
        extra: dict[str, object] = {}
        if client is not None:
            address = client.address.original_text if client.address is not None else client.text
            extra["client_source"] = client.source._value_
            extra["client_chain"] = list(client.chain)
            if client.signals and not decision.signals:
                extra["client_signals"] = [s.as_dict() for s in client.signals]
        extra["event"] = event
        extra["status"] = status
        extra["integration"] = integration
        extra["kind"] = kind
        extra["method"] = method
        extra["path"] = path
        if fields:
            extra.update(fields)
        logger = self._logger
        message = AuditMessage(self._encoder, decision, address or None, extra, at)
        record = make_record(logger.name, self._level, self._levelname, message, created, thread)
        attributes = record.__dict__
        attributes.update(extra)
        attributes["decision"] = decision
        attributes["address"] = address or decision.address
        logger.handle(record)

    def _hook_fields(self, request: RequestInfo) -> dict[str, object] | None:
        """The ``fields`` hook's names (a failing hook or a reserved name is logged)."""
        hook = self._fields
        if hook is None:  # pragma: no cover - callers check
            return None
        try:
            more = hook(request)
        except Exception:
            log.exception("geofence: audit fields hook failed; line written without its fields")
            return None
        fields: dict[str, object] = {}
        for name, value in more.items():
            if name in RESERVED_FIELDS or name in _LINE_FIELDS:
                log.error("geofence: audit field %r is a reserved name; ignored", name)
            else:
                fields[name] = value
        return fields

    def line(
        self,
        decision: Decision,
        address: str | None,
        extra: Mapping[str, object],
        *,
        at: float | None = None,
    ) -> str:
        """The JSON line: exactly ``decision.to_json(address=address, at=at, **extra)``.

        Args:
            decision: The decision.
            address: The address decided (default: :attr:`Decision.address`).
            extra: More keys (they override the decision's own).
            at: Unix time of the decision (default: now).
        """
        return self._encoder.line(decision, address, extra, at=at)
