"""What the gate hands the engine besides the address, and what it decides itself.

:func:`request_context` assembles the request's
:class:`~geofence.context.Context` (the subject hook's answer, forwarding-header
evidence, an empty context when the policy asks for one);
:func:`fail_decision` is the degraded decision the fail mode makes when no
decision can be made.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from geofence.context import Context, Subject
from geofence.decision import Action, Decision

if TYPE_CHECKING:
    from geofence.engine import Geofence
    from geofence.integrations.request import RequestInfo, SubjectHook
    from geofence.signals.proxy import ClientAddress

__all__ = ["DECISION_ERROR", "NO_CLIENT_ADDRESS", "fail_decision", "request_context"]

#: Reason codes of decisions the integrations make themselves.
NO_CLIENT_ADDRESS = "client_address_unavailable"
DECISION_ERROR = "decision_error"

_EMPTY_CONTEXT = Context()


def request_context(
    engine: Geofence,
    client: ClientAddress,
    info: RequestInfo | None,
    *,
    subject: SubjectHook | None,
    client_signals: bool,
) -> Context | None:
    """The request's context: from the subject hook, client evidence, policy needs.

    Raises:
        TypeError: The subject hook returned something else than a Subject or Context.
        Exception: Whatever the subject hook raises.
    """
    context: Context | None = None
    if subject is not None and info is not None:
        found = subject(info)
        if isinstance(found, Subject):
            context = Context(subject=found)
        elif isinstance(found, Context):
            context = found
        elif found is not None:
            raise TypeError(f"subject hook returned {found!r}, not Subject or Context")
    if client_signals and client.signals:
        if context is None:
            context = Context(signals=client.signals)
        else:
            context = replace(context, signals=(*context.signals, *client.signals))
    if context is None and engine.needs_context:
        # Rules on signals or subjects are "unresolved" without a context;
        # with an empty one, absent evidence is a plain "no".
        context = _EMPTY_CONTEXT
    return context


def fail_decision(engine: Geofence, code: str, client: ClientAddress, *, closed: bool) -> Decision:
    """A degraded decision made by the fail mode: ``deny`` when closed, else ``review``.

    Args:
        engine: The engine that could not decide (its policy and snapshot are named).
        code: Why: :data:`NO_CLIENT_ADDRESS` or :data:`DECISION_ERROR`.
        client: The client, as far as it was resolved.
        closed: Whether the fail mode is ``closed``.
    """
    try:
        policy = engine.policy
        ids = {
            "policy_id": policy.id,
            "policy_digest": policy.digest,
            "snapshot_id": engine.snapshot.snapshot_id,
        }
    except Exception:  # pragma: no cover - an engine too broken to describe itself
        ids = {}
    return Decision(
        action=Action.DENY if closed else Action.REVIEW,
        reasons=(code, "fail_closed" if closed else "fail_open"),
        outcome="error",
        degraded=True,
        signals=client.signals,
        address=(client.address.original_text if client.address else client.text) or None,
        **ids,  # type: ignore[arg-type]  # str values for str fields
    )
