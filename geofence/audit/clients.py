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

__all__ = ["NOBODY", "decide_rows", "decide_texts", "resolve_forwarded"]

#: The default trusted-proxy setup: nobody may speak for the client.
NOBODY = TrustedProxies()

#: Receives forwarding-header evidence: (signal code, detail).
SignalSink = Callable[[str, str], None]


def resolve_forwarded(
    peer: str, xff: str, trusted: TrustedProxies
) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """The client a logged peer and ``X-Forwarded-For`` value name, as the middleware finds it.

    Returns:
        ``(client, signals)``: the client address text (``None`` when the peer
        stays the client because the header named no usable address) and the
        forwarding-header evidence as ``(code, detail)`` pairs, in order.
    """
    client = resolve_client(peer, [("x-forwarded-for", xff)], trusted)
    signals = tuple((s.code, s.detail) for s in client.signals)
    return (client.address.original_text if client.address is not None else None), signals


def decide_texts(gf: Geofence, texts: list[str]) -> tuple[list[str], list[Decision]]:
    """Decide client address texts, reading a port or brackets as the middleware reads a peer's.

    Returns:
        ``(texts, decisions)``: each text as counted (``[2001:db8::1]:443``
        becomes ``2001:db8::1``) and its decision; an unusable text is kept as
        logged, with a decision whose ``outcome == "invalid"``.
    """
    texts = list(texts)
    decisions = gf.decide_many(texts, errors="mark")
    for i, d in enumerate(decisions):
        if d.outcome == INVALID:
            client = resolve_client(texts[i], (), NOBODY)
            if client.address is not None:
                texts[i] = client.address.original_text
                decisions[i] = gf.decide(client.address)
    return texts, decisions


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
            client, signals = resolve_forwarded(clients[i], xff, trusted)
            if on_signal is not None:
                for code, detail in signals:
                    on_signal(code, detail)
            if client is not None:
                clients[i] = client
    return decide_texts(gf, clients)
