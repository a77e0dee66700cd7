"""What every integration knows about a request, and the hooks that see it.

:class:`RequestInfo` is the framework-neutral view of a request handed to the
hooks (subject, router, challenge, audit fields); the hook signatures are
defined here too, so one hook serves every integration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from geofence.signals.proxy import ClientAddress, ClientSource

if TYPE_CHECKING:
    from geofence.context import Context, Subject
    from geofence.decision import Decision
    from geofence.integrations.replies import Reply

__all__ = [
    "AuditFieldsHook",
    "ChallengeHook",
    "HeaderSource",
    "RequestInfo",
    "RouterHook",
    "SubjectHook",
]

#: Request headers as ASGI gives them (``(bytes, bytes)`` pairs), as ``(str, str)``
#: pairs, or as a mapping.
HeaderSource = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]

#: Names (str and bytes, lower case) of every header client resolution looks at.
FORWARDING: frozenset[str | bytes] = frozenset(
    name
    for source in ClientSource
    if source is not ClientSource.PEER
    for name in (source.value, source.value.encode("latin-1"))
)


def header_text(value: str | bytes) -> str:
    """A header name or value as text (ASGI gives bytes, Latin-1 by RFC 9110)."""
    return value if isinstance(value, str) else value.decode("latin-1")


def header_value(headers: HeaderSource, name: str) -> str | None:
    """The first value of header ``name`` (lower case), or ``None``."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if header_text(key).lower() == name:
            return header_text(value)
    return None


class RequestInfo:
    """What hooks see of a request, whatever the framework.

    Attributes:
        kind: ``"http"`` or ``"websocket"``.
        method: The HTTP method (``"GET"`` for websocket handshakes).
        path: The request path as the application routes it.
        client: The resolved client address (``None`` on exempt paths).
        native: The framework's own request object: the ASGI scope, the WSGI
            environ, Django's ``HttpRequest`` or Starlette's ``HTTPConnection``.
    """

    __slots__ = ("_headers", "_raw", "client", "kind", "method", "native", "path")

    def __init__(
        self,
        *,
        kind: str,
        method: str,
        path: str,
        client: ClientAddress | None,
        headers: HeaderSource,
        native: object,
    ) -> None:
        self.kind = kind
        self.method = method
        self.path = path
        self.client = client
        self.native = native
        self._raw = headers
        self._headers: dict[str, str] | None = None

    @property
    def headers(self) -> Mapping[str, str]:
        """Request headers, names lower-cased, repeated lines joined with ``", "``."""
        if self._headers is None:
            items = self._raw.items() if isinstance(self._raw, Mapping) else self._raw
            out: dict[str, str] = {}
            for name, value in items:
                key = header_text(name).lower()
                text = header_text(value)
                out[key] = f"{out[key]}, {text}" if key in out else text
            self._headers = out
        return self._headers

    def __repr__(self) -> str:
        return f"RequestInfo(kind={self.kind!r}, method={self.method!r}, path={self.path!r})"


#: ``(request, decision) -> Reply | None``: answer a ``challenge``; ``None`` lets
#: the request through (the subject already passed step-up verification).
ChallengeHook = Callable[["RequestInfo", "Decision"], "Reply | None"]

#: ``(request) -> Subject | Context | None``: who is behind the request. A
#: :class:`~geofence.context.Subject` or :class:`~geofence.context.Context`
#: makes the decision evaluate subject rules and signals.
SubjectHook = Callable[["RequestInfo"], "Subject | Context | None"]

#: ``(request, decision) -> target | None``: the route target exposed to the
#: application (default: :attr:`Decision.route` of ``route`` decisions).
RouterHook = Callable[["RequestInfo", "Decision"], "str | None"]

#: ``(request) -> {name: value}``: more fields for a request's audit line and
#: log record (a request id, a tenant). Called only for lines that are written.
AuditFieldsHook = Callable[["RequestInfo"], Mapping[str, object]]
