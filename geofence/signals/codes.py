"""The signal codes geofence itself emits, for checking the codes a policy names.

Kept as plain data (no imports of the signal modules) so that loading a policy
stays cheap; a test checks it against the codes each module emits. A policy
may name other codes, computed by the application into ``Context.signals``,
once it declares them in ``[signal_weights]`` (see ``docs/signals.md``).
"""

from __future__ import annotations

import difflib
from typing import Final

__all__ = ["BUILTIN_SIGNAL_CODES", "suggest_code"]

BUILTIN_SIGNAL_CODES: Final = frozenset(
    {
        # geofence.signals.proxy: forwarding headers
        "header_untrusted",
        "header_malformed",
        "header_oversized",
        "forwarded_conflict",
        "cdn_header_mismatch",
        "client_obfuscated",
        "client_behind_proxy",
        "private_in_chain",
        "chain_too_short",
        "peer_malformed",
        "proxy_unverified",
        # geofence.signals.hints: client hints
        "tz_mismatch",
        "language_region_mismatch",
        "declared_country_mismatch",
        "location_distance",
        # geofence.signals.pipeline: network kinds and tunnels
        "network_vpn",
        "network_tor",
        "network_public_proxy",
        "network_residential_proxy",
        "network_hosting",
        "network_relay",
        "tunnelled_address",
        # geofence.signals.history: account history
        "impossible_travel",
        "country_hopping",
        "denied_then_evasion",
        "history_unavailable",
        "shared_egress",
    }
)


def suggest_code(code: str) -> str | None:
    """The built-in code ``code`` is most likely a misspelling of, if any."""
    close = difflib.get_close_matches(code, BUILTIN_SIGNAL_CODES, n=1, cutoff=0.75)
    return close[0] if close else None
