"""The common shape of a workaround signal."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Signal"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """One piece of evidence that someone may be working around the policy.

    Signals never decide anything by themselves: policy rules name signal codes
    as conditions, and the risk score sums the weights of the signals present.
    """

    code: str
    """Stable reason code, lower snake case (``"tz_mismatch"``, ``"impossible_travel"``)."""

    weight: float = 1.0
    """Contribution to the risk score (0 = informational)."""

    detail: str = ""
    """Plain-words explanation for audit logs and :meth:`Decision.explain`."""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready mapping."""
        return {"code": self.code, "weight": self.weight, "detail": self.detail}
