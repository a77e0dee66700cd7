"""Numbers, ids, codes and CIDRs are validated where they enter: typed errors, never NaN.

NaN passed ``min_risk >= 0`` (``nan < 0`` is false) and then matched every
request; a NaN or negative signal weight poisoned the risk score and the audit
line; ``Context(at=nan)`` raised a plain ``ValueError`` from deep inside
``decide``. Ids ending in a newline split CLI and log lines, CIDRs inside
tunnel prefixes could never match, and misspelled signal codes were accepted.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.context import Context
from geofence.decision import Action
from geofence.engine import Geofence
from geofence.errors import ContextError, PolicyError
from geofence.policy import Policy, parse_policy
from geofence.policy.model import Rule
from geofence.policy.parse import load_policy
from geofence.signals.base import MAX_WEIGHT, Signal
from geofence.signals.codes import BUILTIN_SIGNAL_CODES
from tests.policy.conftest import ADDR, TODAY

HEAD = '[policy]\nid = "p"\n'


def _rule(body: str) -> str:
    return f'{HEAD}[[rules]]\nid = "r1"\naction = "deny"\n{textwrap.dedent(body)}'


def _error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="bad.toml")
    return info.value


NON_FINITE = ["nan", "inf", "-inf", "+nan"]


@pytest.mark.parametrize("value", NON_FINITE)
def test_min_risk_must_be_finite(value: str) -> None:
    """min_risk = nan (which matched every request) and infinities are refused."""
    err = _error(_rule(f"min_risk = {value}\n"))
    assert "min_risk must be a finite number" in str(err)
    assert err.rule_id == "r1"


@pytest.mark.parametrize("value", [*NON_FINITE, "-1", "1e7"])
def test_signal_weights_must_be_finite_and_bounded(value: str) -> None:
    """A policy weight must be a finite number in [0, MAX_WEIGHT]."""
    err = _error(f"{HEAD}[signal_weights]\ntz_mismatch = {value}\n")
    assert "[signal_weights] must map signal codes to finite numbers" in str(err)


@pytest.mark.parametrize("weight", [math.nan, math.inf, -math.inf, -0.5, MAX_WEIGHT * 2, True, "1"])
def test_signal_weight_is_validated_at_construction(weight: object) -> None:
    """Signal(weight=nan) and friends raise ContextError (a ValueError) when built."""
    with pytest.raises(ContextError, match="weight must be a finite number"):
        Signal(code="custom", weight=weight)  # type: ignore[arg-type]


@pytest.mark.parametrize("at", [math.nan, math.inf, -math.inf, True, "now"])
def test_context_time_is_validated_at_construction(at: object) -> None:
    """Context(at=nan) raises ContextError where it is made, not inside decide()."""
    with pytest.raises(ContextError, match=r"Context\.at"):
        Context(at=at)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "location", [(math.nan, 0.0), (0.0, math.inf), (91.0, 0.0), (0.0, -181.0), (1.0,), "here"]
)
def test_declared_location_is_validated(location: object) -> None:
    """A declared location must be two finite coordinates in range."""
    with pytest.raises(ContextError, match="declared_location"):
        Context(declared_location=location)  # type: ignore[arg-type]


def test_context_signals_must_be_signals() -> None:
    """A list or a bare string as signals is refused (it would be iterated per character)."""
    with pytest.raises(ContextError, match=r"Context\.signals"):
        Context(signals=["tz_mismatch"])  # type: ignore[arg-type]


def test_model_refuses_non_finite_numbers() -> None:
    """Rule and Policy built directly (not parsed) check their numbers too."""
    from geofence.decision import Action

    with pytest.raises(PolicyError, match="min_risk"):
        Rule(id="r", action=Action.DENY, min_risk=math.nan)
    with pytest.raises(PolicyError, match="signal weight"):
        Policy(id="p", signal_weights=(("tz_mismatch", math.inf),))


@settings(max_examples=100, deadline=None)
@given(
    weights=st.lists(
        st.floats(min_value=0, max_value=MAX_WEIGHT, allow_nan=False), min_size=1, max_size=50
    )
)
def test_risk_and_audit_line_stay_finite(weights: list[float]) -> None:
    """Any accepted weights give a finite risk and an audit line that is strict JSON."""
    pol = parse_policy(_rule("min_risk = 1.0\n"), source="p.toml")
    gf = _engine(pol)
    signals = tuple(Signal(code=f"s{i}", weight=w) for i, w in enumerate(weights))
    decision = gf.decide(ADDR["us"], Context(signals=signals))
    assert decision.risk is not None
    assert math.isfinite(decision.risk)

    def refuse(token: str) -> object:
        raise AssertionError(f"audit line holds {token}")

    line = json.loads(decision.to_json(at=0.0), parse_constant=refuse)
    assert line["risk"] == decision.risk
    assert decision.action is (Action.DENY if decision.risk >= 1.0 else Action.ALLOW)


_ENGINES: dict[str, Geofence] = {}


def _engine(pol: Policy) -> Geofence:
    """One engine per policy digest over the policy-test world (engines are reusable)."""
    from tests.policy.conftest import build_world

    if pol.digest not in _ENGINES:
        _ENGINES[pol.digest] = Geofence(build_world(), pol, today=lambda: TODAY)
    return _ENGINES[pol.digest]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[policy]\nid = "a\\n"\n', "[policy] id must be a short identifier"),
        (HEAD + '[[rules]]\nid = "r\\n"\naction = "deny"\nasns = [1]\n', "rules[0] needs an id"),
        (HEAD + '[groups]\n"g\\n" = ["FR"]\n', "group name"),
        (_rule('signals = ["tz\\n"]\n'), "signals must be a non-empty list"),
    ],
)
def test_identifiers_ending_in_a_newline_are_refused(text: str, fragment: str) -> None:
    """'$' matched before a final newline; ids, routes, groups and codes now end at the end."""
    assert fragment in str(_error(text))


@pytest.mark.parametrize(
    ("cidr", "advice"),
    [
        ("2002:c000:200::/40", "write '192.0.2.0/24' instead"),
        ("2002:c633:6401::/48", "write '198.51.100.1/32' instead"),
        ("2002::/16", "write '0.0.0.0/0' instead"),
        ("2002:c633:6401:1::/64", "name the IPv4 network it carries instead"),
        ("64:ff9b::c633:6400/120", "write '198.51.100.0/24' instead"),
        ("64:ff9b::/96", "write '0.0.0.0/0' instead"),
        ("2001:0:4136:e378::/64", "name the IPv4 network it carries instead"),
        ("2001::/32", "name the IPv4 network it carries instead"),
    ],
)
def test_cidrs_inside_tunnel_prefixes_are_refused_with_advice(cidr: str, advice: str) -> None:
    """A network inside 6to4, Teredo or NAT64 can never match: say so, and name the IPv4 form."""
    err = _error(_rule(f'cidrs = ["{cidr}"]\n'))
    assert "can never match" in str(err)
    assert advice in str(err)


@pytest.mark.parametrize("cidr", ["2001:db8::/32", "2000::/3", "2003::/16", "2001:1::/32"])
def test_other_ipv6_cidrs_are_still_accepted(cidr: str) -> None:
    """Networks outside the tunnel prefixes (or containing them) load as before."""
    pol = parse_policy(_rule(f'cidrs = ["{cidr}"]\n'))
    assert pol.rules[0].cidr_text == (cidr,)


def test_unwrapped_ipv4_advice_matches_the_tunnelled_address() -> None:
    """The suggested IPv4 network decides the 6to4 address the refused CIDR was meant for."""
    pol = parse_policy(_rule('cidrs = ["192.0.2.0/24"]\n'))
    gf = _engine(pol)
    # 2002:c000:0201::1 is the 6to4 site 192.0.2.1 (RFC 3056): inside the refused /40.
    assert gf.decide("2002:c000:201::1").action is Action.DENY


@pytest.mark.parametrize(
    ("code", "suggestion"),
    [
        ("tz_mismtach", "tz_mismatch"),
        ("impossible_travle", "impossible_travel"),
        ("network_vpns", "network_vpn"),
        ("header_untrusted_", "header_untrusted"),
    ],
)
def test_misspelled_signal_codes_are_refused_with_a_suggestion(code: str, suggestion: str) -> None:
    """A code that is not built in and not declared is refused, naming the likely intent."""
    err = _error(_rule(f'signals = ["{code}"]\n'))
    assert f"unknown signal code {code!r}; did you mean {suggestion!r}?" in str(err)


def test_custom_codes_need_a_declared_weight() -> None:
    """A code of the application's own is accepted once [signal_weights] declares it."""
    err = _error(_rule('signals = ["bot_score_high"]\n'))
    assert "must be declared in [signal_weights]" in str(err)
    assert "did you mean" not in str(err)
    text = _rule('signals = ["bot_score_high"]\n') + "[signal_weights]\nbot_score_high = 2.0\n"
    assert parse_policy(text).rules[0].signals == frozenset({"bot_score_high"})


def test_declared_weight_that_looks_like_a_builtin_is_refused() -> None:
    """[signal_weights] tz_mismtach = 1 would silently weigh nothing: refused with the fix."""
    err = _error(f"{HEAD}[signal_weights]\ntz_mismtach = 1.0\n")
    assert "did you mean 'tz_mismatch'?" in str(err)


def test_builtin_codes_match_what_the_modules_emit() -> None:
    """The code list used by the parser is exactly the set of codes the signal modules emit."""
    import re

    import geofence.signals as package

    emitted: set[str] = set()
    for path in Path(package.__file__).parent.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        emitted |= set(re.findall(r'code="([a-z_]+)"', text))
    from geofence.signals import hints, pipeline, proxy

    emitted |= set(proxy.SIGNAL_WEIGHTS) | set(hints.SIGNAL_WEIGHTS)
    emitted |= set(pipeline.NETWORK_WEIGHTS)
    assert emitted == BUILTIN_SIGNAL_CODES


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (HEAD.encode() + b'description = "caf\xe9"\n', "not UTF-8 text: byte 0xe9 on line 3"),
        (HEAD.encode() + b"[groups]\nx = 5\n", "[groups] x must be a list"),
        (HEAD.encode() + b"x = " + b"[" * 3000 + b"]" * 3000 + b"\n", "nested too deeply"),
        (HEAD.encode() + b"[groups]\nx = {a = 1}\n", "[groups] x must be a list"),
    ],
)
def test_files_that_raised_other_errors_give_policy_errors(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    """Non-UTF-8 bytes, wrongly typed groups and deep nesting: PolicyError naming the file."""
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"{path}: ")
    assert fragment in str(info.value)
