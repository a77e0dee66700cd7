"""Workaround signals: proxy chains, network kinds, client hints and account history.

Every signal is evidence with a reason code and a weight; the policy decides
what it leads to (see ``docs/signals.md``).
"""

from geofence.signals.base import Signal

__all__ = ["Signal"]
