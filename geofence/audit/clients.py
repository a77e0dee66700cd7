"""Each log line's client address, found as the middleware finds it, and its decision.

When a line carries an ``X-Forwarded-For`` value, the logged peer and that
header go through :func:`geofence.signals.proxy.resolve_client` with the
configured :class:`~geofence.signals.proxy.TrustedProxies` (by default nobody
is trusted: the header is ignored, and ``header_untrusted`` is reported). A
peer written with a port or in brackets (``[2001:db8::1]:443``) is read by the
same function. Decisions are made for a whole block with
``decide_many(errors="mark")``; a line whose address is unusable keeps an
``invalid`` decision.
"""

from __future__ import annotations

from collections.abc import Callable

from geofence._batch import INVALID
from geofence.audit.formats import Rows
from geofence.decision import Decision
from geofence.engine import Geofence
from geofence.signals.proxy import TrustedProxies, resolve_client

__all__ = ["NOBODY", "decide_rows"]

#: The default trusted-proxy setup: nobody may speak for the client.
NOBODY = TrustedProxies()

#: Receives forwarding-header evidence: (signal code, detail).
SignalSink = Callable[[str, str], None]


def decide_rows(
    gf: Geofence,
    rows: Rows,
    trusted: TrustedProxies = NOBODY,
    on_signal: SignalSink | None = None,
) -> tuple[list[str], list[Decision]]:
    """The client address text and the decision of every row, in order.

    Args:
        gf: The engine.
        rows: Parsed log lines.
        trusted: Who may speak for the client in ``X-Forwarded-For``.
        on_signal: Called with each piece of forwarding-header evidence.

    Returns:
        ``(clients, decisions)``; a row whose address is unusable has its text as
        logged and a decision with ``outcome == "invalid"``.
    """
    clients = list(rows.peer)
    if any(rows.xff):
        for i, xff in enumerate(rows.xff):
            if xff is None:
                continue
            client = resolve_client(clients[i], [("x-forwarded-for", xff)], trusted)
            if on_signal is not None:
                for s in client.signals:
                    on_signal(s.code, s.detail)
            if client.address is not None:
                clients[i] = client.address.original_text
    decisions = gf.decide_many(clients, errors="mark")
    for i, d in enumerate(decisions):
        if d.outcome == INVALID:
            # A peer with a port or in brackets: read it as the middleware reads a peer.
            client = resolve_client(clients[i], (), NOBODY)
            if client.address is not None:
                clients[i] = client.address.original_text
                decisions[i] = gf.decide(client.address)
    return clients, decisions
