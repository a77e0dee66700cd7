"""``route:<target>`` made concrete: map each target to what serves it.

A ``route`` decision says "serve this request, but from a permitted
alternative": another region's upstream, an older model tier. The middleware
exposes the target (``request.state.geofence_route``, ``request.geofence_route``,
the ``X-Geofence-Route`` header); a :class:`RouteTable` turns it into the
callable, URL or model name that serves it, and refuses a target it does not
know rather than serving it from the default.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from geofence.errors import GeofenceError

if TYPE_CHECKING:
    from geofence.policy.model import Policy

__all__ = ["RouteTable", "UnknownRouteError", "policy_routes"]

T = TypeVar("T")


class UnknownRouteError(GeofenceError, LookupError):
    """A decision names a route target the route table has no entry for."""


def policy_routes(policy: Policy) -> frozenset[str]:
    """Every route target ``policy`` can decide (rules, exceptions and fallbacks)."""
    routes = {rule.route for rule in (*policy.rules, *policy.exceptions)}
    fallbacks = (policy.default, policy.on_unresolved, policy.on_unknown, policy.on_reserved)
    routes.update(route for _, route in fallbacks)
    return frozenset(route for route in routes if route is not None)


class RouteTable(Generic[T]):
    """Route targets -> what serves them; requests without a target get ``default``.

    Args:
        targets: One entry per route target (``{"eu-tier": eu_model}``).
        default: What serves requests that are not routed.
        policy: Check now that every target this policy can decide has an entry.

    Raises:
        ValueError: ``targets`` is not a mapping of strings, or ``policy``
            decides a target the table lacks.
    """

    __slots__ = ("_default", "_targets")

    def __init__(self, targets: Mapping[str, T], *, default: T, policy: Policy | None = None):
        if not isinstance(targets, Mapping) or not all(isinstance(k, str) for k in targets):
            raise ValueError(f"targets must map route target names to values, got {targets!r}")
        self._targets = dict(targets)
        self._default = default
        if policy is not None:
            self.check(policy)

    def check(self, policy: Policy) -> None:
        """Make sure every route target ``policy`` can decide has an entry.

        Raises:
            ValueError: Naming the policy and the missing targets.
        """
        missing = sorted(policy_routes(policy) - set(self._targets))
        if missing:
            raise ValueError(
                f"policy {policy.id!r} routes to {missing}, which the route table lacks "
                f"(it has {sorted(self._targets)})"
            )

    def resolve(self, route: str | None) -> T:
        """What serves a request with route target ``route`` (``None``: the default).

        Raises:
            UnknownRouteError: ``route`` is not in the table. Serving a routed
                request from the default would ignore the policy's decision.
        """
        if route is None:
            return self._default
        try:
            return self._targets[route]
        except KeyError:
            raise UnknownRouteError(
                f"route target {route!r} has no entry in the route table "
                f"(known: {sorted(self._targets)})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __repr__(self) -> str:
        return f"RouteTable({sorted(self._targets)!r})"
