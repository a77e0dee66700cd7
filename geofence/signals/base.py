"""The common shape of a workaround signal."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from geofence.errors import ContextError

__all__ = ["MAX_WEIGHT", "Signal", "check_weight"]

#: Largest signal weight accepted: far above any useful score, and small enough
#: that no sum of weights overflows to infinity.
MAX_WEIGHT: Final = 1e6


def check_weight(value: object) -> bool:
    """Whether ``value`` is a usable weight: a finite number in ``[0, MAX_WEIGHT]`` (no bool)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_WEIGHT
    )


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

    def __post_init__(self) -> None:
        """Refuse weights that would poison the risk score (NaN, infinities, negatives).

        Raises:
            ContextError: ``code`` is not a string, or ``weight`` is not a finite
                number between 0 and :data:`MAX_WEIGHT`.
        """
        if not check_weight(self.weight):
            raise ContextError(
                f"signal {self.code!r}: weight must be a finite number between 0 and "
                f"{MAX_WEIGHT:g}, got {self.weight!r}"
            )
        if not isinstance(self.code, str):
            raise ContextError(f"signal code must be a string, got {self.code!r}")

    def as_dict(self) -> dict[str, object]:
        """JSON-ready mapping."""
        return {"code": self.code, "weight": self.weight, "detail": self.detail}
