"""Tests of geofence.policy.parse: the TOML format, groups, params and every validation error."""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from pathlib import Path

import pytest

from geofence.decision import Action
from geofence.errors import PolicyError
from geofence.kinds import NetworkKind
from geofence.policy import load_policy, parse_policy, preset_names
from geofence.policy.groups import EEA, EU

HEAD = '[policy]\nid = "p"\n'


def _rule(body: str, rid: str = "r1") -> str:
    """A policy with one rule whose keys are ``body`` (TOML lines)."""
    return f'{HEAD}[[rules]]\nid = "{rid}"\n{textwrap.dedent(body)}'


def _error(text: str, **params: object) -> PolicyError:
    """Parse ``text`` (source "bad.toml") and return the PolicyError it raises."""
    with pytest.raises(PolicyError) as info:
        parse_policy(textwrap.dedent(text), source="bad.toml", params=params or None)
    return info.value


# -- a valid policy --------------------------------------------------------------------------


def test_full_policy_parses() -> None:
    """Every key of the format parses into the model with the documented types."""
    p = parse_policy(
        textwrap.dedent(
            """
            [policy]
            id = "full"
            version = "2026-01-01"
            description = "All keys."
            default = "review"
            on_unresolved = "challenge"
            on_unknown = "route:unknown-tier"
            on_reserved = "deny"
            shadow = false

            [groups]
            nordics = ["SE", "NO", "DK", "FI", "IS"]

            [[exceptions]]
            id = "lab"
            action = "allow"
            cidrs = ["198.51.100.0/24", "2001:db8::/32"]
            subject = { org_ids = ["org-1"] }

            [[rules]]
            id = "r1"
            action = "route:eu-tier"
            description = "Route the Nordics."
            citation = "Internal memo 7"
            note = "free text"
            effective_from = 2026-01-01
            effective_to = "2027-01-01"
            shadow = true
            jurisdictions = ["@nordics", "ua-43"]
            kinds = ["vpn", "public-proxy"]
            asns = [64500, 4200000000]

            [[rules]]
            id = "r2"
            action = "deny"
            not_jurisdictions = ["US"]
            partial_jurisdictions = ["UA-14"]
            subject = { nationality = ["IR"], nationality_not = ["US"], account_country = ["CU"], ids = ["u1"], verified = true }
            signals = ["tz_mismatch"]
            min_risk = 2

            [signal_weights]
            tz_mismatch = 1.5
            """
        ),
        source="full.toml",
    )
    assert (p.id, p.version, p.source) == ("full", "2026-01-01", "full.toml")
    assert p.default == (Action.REVIEW, None)
    assert p.on_unknown == (Action.ROUTE, "unknown-tier")
    assert p.on_reserved == (Action.DENY, None)
    exc = p.exceptions[0]
    assert (exc.action, exc.cidr_text) == (Action.ALLOW, ("198.51.100.0/24", "2001:db8::/32"))
    r1, r2 = p.rules
    assert (r1.action, r1.route, r1.shadow) == (Action.ROUTE, "eu-tier", True)
    assert r1.jurisdictions == frozenset({"SE", "NO", "DK", "FI", "IS", "UA-43"})
    assert r1.kinds == NetworkKind.VPN | NetworkKind.PUBLIC_PROXY
    assert r1.asns == frozenset({64500, 4200000000})
    assert (r1.effective_from, r1.effective_to) == (dt.date(2026, 1, 1), dt.date(2027, 1, 1))
    assert (r1.description, r1.citation) == ("Route the Nordics.", "Internal memo 7")
    assert r2.subject.nationality == frozenset({"IR"})
    assert r2.subject.verified is True
    assert (r2.signals, r2.min_risk) == (frozenset({"tz_mismatch"}), 2.0)
    assert p.signal_weights == (("tz_mismatch", 1.5),)
    assert p.date_boundaries() == [dt.date(2026, 1, 1), dt.date(2027, 1, 1)]
    assert p.needs_context


def test_defaults() -> None:
    """A minimal policy allows by default and reviews unresolved addresses."""
    p = parse_policy(HEAD)
    assert p.default == p.on_unknown == p.on_reserved == (Action.ALLOW, None)
    assert p.on_unresolved == (Action.REVIEW, None)
    assert (p.rules, p.exceptions, p.shadow, p.version) == ((), (), False, "")
    assert p.exceptions == ()


def test_builtin_and_custom_groups() -> None:
    """@EU and @EEA expand to their members; custom groups may refer to other groups."""
    p = parse_policy(
        HEAD
        + textwrap.dedent(
            """
            [groups]
            europe_plus = ["@EEA", "CH", "@islands"]
            islands = ["GB", "IE"]
            [[rules]]
            id = "eu"
            action = "deny"
            jurisdictions = ["@EU"]
            [[rules]]
            id = "wide"
            action = "review"
            jurisdictions = ["@europe_plus"]
            """
        )
    )
    assert p.rules[0].jurisdictions == EU
    assert len(EU) == 27
    assert p.rules[1].jurisdictions == EEA | {"CH", "GB", "IE"}
    assert {"IS", "LI", "NO"} <= EEA


def test_custom_group_overrides_builtin() -> None:
    """A policy's own group of the same name takes precedence over a built-in one."""
    p = parse_policy(
        HEAD + '[groups]\nEU = ["FR"]\n[[rules]]\nid = "r"\naction = "deny"\n'
        'jurisdictions = ["@EU"]\n'
    )
    assert p.rules[0].jurisdictions == frozenset({"FR"})


def test_digest_identifies_content() -> None:
    """The digest ignores formatting and descriptions but changes with any condition."""
    a = parse_policy(_rule('action = "deny"\njurisdictions = ["IR", "CU"]\n'))
    b = parse_policy(_rule('action="deny"\njurisdictions=["CU","IR"]\ndescription = "x"\n'))
    c = parse_policy(_rule('action = "deny"\njurisdictions = ["IR"]\n'))
    assert a.digest == b.digest != c.digest
    assert len(a.digest) == 16


# -- params ----------------------------------------------------------------------------------

PARAMS = """
[params]
home = ["US"]
target = "route:home-tier"

[policy]
id = "param"
default = "{target}"

[[rules]]
id = "not-home"
action = "deny"
not_jurisdictions = ["{home}", "PR"]

[[rules]]
id = "persons"
action = "deny"
subject = { nationality_not = "{home}" }
"""


def test_params_defaults_and_values() -> None:
    """A list param is spliced into a list, a bare placeholder replaced by the value."""
    p = parse_policy(PARAMS)
    assert p.rules[0].not_jurisdictions == frozenset({"US", "PR"})
    assert p.rules[1].subject.nationality_not == frozenset({"US"})
    assert p.default == (Action.ROUTE, "home-tier")
    q = parse_policy(PARAMS, params={"home": ["GB", "IE"], "target": "review"})
    assert q.rules[0].not_jurisdictions == frozenset({"GB", "IE", "PR"})
    assert q.rules[1].subject.nationality_not == frozenset({"GB", "IE"})
    assert q.default == (Action.REVIEW, None)
    assert p.digest != q.digest
    # A string value is one item in a list position, but not a list in a bare position.
    err = _error(PARAMS, home="DE")
    assert err.rule_id == "persons"
    assert "must be a non-empty list" in str(err)


@pytest.mark.parametrize(
    ("text", "params", "fragment"),
    [
        (PARAMS, {"house": ["US"]}, "unknown params ['house']"),
        (HEAD, {"home": ["US"]}, "declares no [params]"),
        ("params = 5\n" + HEAD, {}, "[params] must be a table"),
    ],
)
def test_params_errors(text: str, params: dict[str, object], fragment: str) -> None:
    """Unknown params, params for a policy without [params], and a bad [params] are refused."""
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="bad.toml", params=params or None)
    assert fragment in str(info.value)
    assert str(info.value).startswith("bad.toml: ")


def test_param_of_the_wrong_type_names_the_rule() -> None:
    """A param value that makes a rule invalid fails with that rule's id."""
    err = _error(PARAMS, home=[5])
    assert err.rule_id == "not-home"
    assert "5 is not a string" in str(err)
    err = _error(PARAMS, home=["XX"])
    assert err.rule_id == "not-home"
    assert "unknown country code 'XX'" in str(err)


# -- loading ---------------------------------------------------------------------------------


def test_load_policy_from_file_and_preset(tmp_path: Path) -> None:
    """load_policy reads a path, a preset name and "preset:NAME"; the source is recorded."""
    path = tmp_path / "mine.toml"
    path.write_text(_rule('action = "deny"\njurisdictions = ["IR"]\n'), encoding="utf-8")
    assert load_policy(path).source == str(path)
    assert load_policy(str(path)).rules[0].id == "r1"
    assert "allow-all" in preset_names()
    assert load_policy("allow-all").id == "allow-all"
    assert load_policy("preset:allow-all").id == "allow-all"


def test_load_policy_errors(tmp_path: Path) -> None:
    """A missing file or preset is a PolicyError naming it."""
    with pytest.raises(PolicyError, match="no preset named 'no-such-preset'"):
        load_policy("no-such-preset")
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy(tmp_path / "missing.toml")
    with pytest.raises(PolicyError, match="no preset named"):
        load_policy("preset:missing")


# -- validation errors: one per rule the parser enforces ----------------------------------------

# (policy text, rule id named or None, fragment of the message)
RULE_ERRORS: list[tuple[str, str, str]] = [
    (_rule('action = "deny"\njurisdiction = ["IR"]\n'), "r1", "unknown keys ['jurisdiction']"),
    (
        _rule('action = "deny"\nsubject = { nationalty = ["IR"] }\n'),
        "r1",
        "unknown subject keys ['nationalty']",
    ),
    (_rule('action = "deny"\nsubject = "IR"\n'), "r1", "subject must be a table"),
    (_rule('action = "deny"\njurisdictions = ["XX"]\n'), "r1", "unknown country code 'XX'"),
    (
        _rule('action = "deny"\njurisdictions = ["UA-99"]\n'),
        "r1",
        "unknown subdivision code 'UA-99'",
    ),
    (_rule('action = "deny"\njurisdictions = []\n'), "r1", "non-empty list"),
    (_rule('action = "deny"\njurisdictions = "IR"\n'), "r1", "non-empty list"),
    (_rule('action = "deny"\njurisdictions = [7]\n'), "r1", "7 is not a string"),
    (
        _rule('action = "deny"\nsubject = { nationality = ["ZZ"] }\n'),
        "r1",
        "subject.nationality: unknown country code 'ZZ'",
    ),
    (_rule('action = "deny"\nkinds = ["vpnn"]\n'), "r1", "unknown network kind 'vpnn'"),
    (_rule('action = "deny"\nkinds = []\n'), "r1", "kinds must name at least one kind"),
    (_rule('action = "deny"\nkinds = "vpn"\n'), "r1", "kinds must be a list"),
    (_rule('action = "deny"\ncidrs = ["1.2.3.256/24"]\n'), "r1", "is not a valid network"),
    (_rule('action = "deny"\ncidrs = ["10.0.0.1/8"]\n'), "r1", "has host bits set"),
    (_rule('action = "deny"\ncidrs = ["2001:db8::1/32"]\n'), "r1", "has host bits set"),
    (
        _rule('action = "deny"\ncidrs = ["::ffff:1.2.3.0/120"]\n'),
        "r1",
        "write IPv4-mapped '::ffff:1.2.3.0/120' as an IPv4 network",
    ),
    (_rule('action = "deny"\ncidrs = []\n'), "r1", "cidrs must be a non-empty list"),
    (_rule('action = "deny"\ncidrs = [10]\n'), "r1", "10 is not a string"),
    (_rule('action = "deny"\nasns = [0]\n'), "r1", "asns must be a non-empty list"),
    (_rule('action = "deny"\nasns = ["AS1"]\n'), "r1", "asns must be a non-empty list"),
    (_rule('action = "deny"\nasns = [4294967296]\n'), "r1", "asns must be a non-empty list"),
    (_rule('action = "deny"\nsignals = ["Bad Code"]\n'), "r1", "signals must be a non-empty"),
    (_rule('action = "deny"\nmin_risk = -1\n'), "r1", "min_risk must be a finite"),
    (_rule('action = "deny"\nmin_risk = true\n'), "r1", "min_risk must be a finite"),
    (_rule('action = "deny"\nasns = [1]\nshadow = "yes"\n'), "r1", "shadow must be true or false"),
    (
        _rule('action = "deny"\nsubject = { verified = "yes" }\n'),
        "r1",
        "subject.verified must be true or false",
    ),
    (
        _rule('action = "deny"\nsubject = { org_ids = [] }\n'),
        "r1",
        "subject.org_ids must be a non-empty list of strings",
    ),
    (
        _rule('action = "deny"\nasns = [1]\neffective_from = "2024-13-01"\n'),
        "r1",
        "effective_from must be a date (YYYY-MM-DD), got '2024-13-01'",
    ),
    (
        _rule('action = "deny"\nasns = [1]\neffective_from = 2024-01-01T00:00:00\n'),
        "r1",
        "effective_from must be a date (YYYY-MM-DD), not a date-time",
    ),
    (
        _rule('action = "deny"\nasns = [1]\neffective_to = 20240101\n'),
        "r1",
        "effective_to must be a date",
    ),
    (
        _rule(
            'action = "deny"\nasns = [1]\neffective_from = 2024-02-01\neffective_to = 2024-02-01\n'
        ),
        "r1",
        "effective_to 2024-02-01 is not after effective_from 2024-02-01",
    ),
    (
        _rule(
            'action = "deny"\nasns = [1]\neffective_from = 2024-02-01\neffective_to = 2024-01-01\n'
        ),
        "r1",
        "is not after effective_from",
    ),
    (_rule('action = "deny"\n'), "r1", "the rule has no conditions"),
    (
        _rule('action = "deny"\ndescription = "only words"\ncitation = "x"\n'),
        "r1",
        "the rule has no conditions",
    ),
    (
        _rule('action = "deny"\njurisdictions = ["US", "IR"]\nnot_jurisdictions = ["US"]\n'),
        "r1",
        "contradictory: ['US'] are in both",
    ),
    (
        _rule('action = "deny"\npartial_jurisdictions = ["UA"]\n'),
        "r1",
        "partial_jurisdictions takes subdivision codes",
    ),
    (_rule('action = "block"\nasns = [1]\n'), "r1", "unknown action 'block'"),
    (_rule('action = "route"\nasns = [1]\n'), "r1", "needs a target"),
    (_rule('action = "route:"\nasns = [1]\n'), "r1", "needs a target"),
    (
        _rule('action = "route:bad target!"\nasns = [1]\n'),
        "r1",
        "route target 'bad target!' is not an identifier",
    ),
    (_rule('action = "deny:x"\nasns = [1]\n'), "r1", "only route takes a target"),
    (_rule("action = 5\nasns = [1]\n"), "r1", "action must be a string"),
    (_rule("asns = [1]\n"), "r1", "a rule needs an action"),
    (_rule('action = "deny"\njurisdictions = ["@NOPE"]\n'), "r1", "unknown group '@NOPE'"),
    (
        HEAD + '[[exceptions]]\nid = "e1"\njurisdictions = ["US"]\n',
        "e1",
        "exceptions take only cidrs and subject conditions",
    ),
    (
        HEAD + '[[exceptions]]\nid = "e1"\ncidrs = ["10.0.0.0/8"]\nmin_risk = 1\n',
        "e1",
        "exceptions take only cidrs and subject conditions",
    ),
    (
        _rule('action = "deny"\njurisdictions = ["IR"]\n')
        + '[[rules]]\nid = "r2"\naction = "challenge"\njurisdictions = ["IR"]\n',
        "r2",
        "unreachable: rule 'r1' has the same conditions and dates and comes first",
    ),
]


@pytest.mark.parametrize(("text", "rule_id", "fragment"), RULE_ERRORS)
def test_rule_errors_name_source_and_rule(text: str, rule_id: str, fragment: str) -> None:
    """Each invalid rule raises a PolicyError naming the source, the rule id and the reason."""
    err = _error(text)
    message = str(err)
    assert message.startswith(f"bad.toml: rule {rule_id!r}: "), message
    assert fragment in message
    assert (err.source, err.rule_id) == ("bad.toml", rule_id)
    assert isinstance(err, ValueError)


# (policy text, fragment of the message): errors about the policy as a whole.
POLICY_ERRORS: list[tuple[str, str]] = [
    ("[policy\n", "invalid TOML"),
    (_rule('action = "deny"\nasns = [1]\neffective_from = 2024-13-01\n'), "invalid TOML"),
    ('[polcy]\nid = "p"\n', "unknown top-level keys ['polcy']"),
    ('[rules]\nid = "x"\n', "missing [policy] table"),
    ('[policy]\nid = "p"\ndefualt = "allow"\n', "unknown keys in [policy]: ['defualt']"),
    ("[policy]\nversion = 1\n", "[policy] id must be a short identifier"),
    ('[policy]\nid = "has space"\n', "[policy] id must be a short identifier"),
    ('[policy]\nid = "p"\ndefault = "block"\n', "default: unknown action 'block'"),
    ('[policy]\nid = "p"\non_unresolved = "route:"\n', "on_unresolved: route action"),
    ('[policy]\nid = "p"\non_unknown = "allow:x"\n', "on_unknown: only route takes a target"),
    ('[policy]\nid = "p"\non_reserved = 1\n', "on_reserved: action must be a string"),
    ('[policy]\nid = "p"\nshadow = "no"\n', "[policy] shadow must be true or false"),
    (HEAD + 'groups = ["EU"]\n', "unknown keys in [policy]: ['groups']"),
    ("groups = 1\n" + HEAD, "[groups] must be a table"),
    (HEAD + '[groups]\n"bad name" = ["FR"]\n', "group name 'bad name' is not an identifier"),
    (
        HEAD + '[groups]\na = ["@b"]\nb = ["@a"]\n',
        "groups refer to each other in a cycle: ['a', 'b']",
    ),
    (HEAD + '[groups]\na = ["@a"]\n', "groups refer to each other in a cycle: ['a']"),
    (HEAD + '[groups]\na = ["@nowhere"]\n', "groups.a: unknown group '@nowhere'"),
    (HEAD + '[groups]\na = ["QQ"]\n', "groups.a: unknown country code 'QQ'"),
    (HEAD + "[signal_weights]\ntz_mismatch = -1\n", "[signal_weights] must map signal codes"),
    (HEAD + '[signal_weights]\n"Bad" = 1\n', "[signal_weights] must map signal codes"),
    (HEAD + "rules = 3\n", "unknown keys in [policy]: ['rules']"),
    ("rules = 3\n" + HEAD, "rules must be an array of tables"),
    (HEAD + '[[rules]]\naction = "deny"\n', "rules[0] needs an id"),
    (HEAD + '[[rules]]\nid = "-bad"\naction = "deny"\n', "rules[0] needs an id"),
    (HEAD + '[[exceptions]]\ncidrs = ["10.0.0.0/8"]\n', "exceptions[0] needs an id"),
]


@pytest.mark.parametrize(("text", "fragment"), POLICY_ERRORS)
def test_policy_errors_name_source(text: str, fragment: str) -> None:
    """Errors about the policy as a whole raise a PolicyError naming the source."""
    err = _error(text)
    assert str(err).startswith("bad.toml: "), str(err)
    assert fragment in str(err)
    assert err.rule_id is None


@pytest.mark.parametrize(
    "text",
    [
        _rule('action = "deny"\njurisdictions = ["IR"]\n', "dup")
        + '[[rules]]\nid = "dup"\naction = "deny"\njurisdictions = ["CU"]\n',
        HEAD + '[[exceptions]]\nid = "dup"\ncidrs = ["10.0.0.0/8"]\n'
        '[[rules]]\nid = "dup"\naction = "deny"\njurisdictions = ["CU"]\n',
    ],
)
def test_duplicate_ids(text: str) -> None:
    """Two rules (or a rule and an exception) with one id are refused, naming the id."""
    err = _error(text)
    assert "duplicate rule ids ['dup']" in str(err)
    assert str(err).startswith("bad.toml: ")


def test_same_conditions_are_allowed_when_they_differ_otherwise() -> None:
    """Rules with the same place but different dates, or after a shadow rule, are reachable."""
    p = parse_policy(
        HEAD
        + textwrap.dedent(
            """
            [[rules]]
            id = "trial"
            action = "deny"
            shadow = true
            jurisdictions = ["IR"]
            [[rules]]
            id = "old"
            action = "review"
            jurisdictions = ["IR"]
            effective_to = 2025-01-01
            [[rules]]
            id = "new"
            action = "deny"
            jurisdictions = ["IR"]
            """
        )
    )
    assert [r.id for r in p.rules] == ["trial", "old", "new"]


def test_codes_are_normalised() -> None:
    """Country and subdivision codes are upper-cased and stripped; kinds accept - and _."""
    p = parse_policy(
        _rule(
            'action = "deny"\njurisdictions = [" ir", "ua-43"]\n'
            'kinds = ["Public-Proxy", "residential_proxy"]\n'
        )
    )
    assert p.rules[0].jurisdictions == frozenset({"IR", "UA-43"})
    assert p.rules[0].kinds == NetworkKind.PUBLIC_PROXY | NetworkKind.RESIDENTIAL_PROXY


def test_docs_examples_parse() -> None:
    """Every TOML example in docs/policy.md is a valid policy (or policy fragment)."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "policy.md"
    blocks = re.findall(r"```toml\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 5
    for block in blocks:
        parse_policy(block if "[policy]" in block else HEAD + block, source="docs/policy.md")


def test_kosovo_user_assigned_code_is_accepted() -> None:
    """XK (Kosovo, user-assigned and used by IP data) is accepted although pycountry lacks it."""
    from geofence.policy import parse_policy

    pol = parse_policy(_rule('action = "deny"\njurisdictions = ["XK"]\n'))
    assert pol.rules[0].jurisdictions == frozenset({"XK"})


def test_policy_effective_date_key_is_refused() -> None:
    """Keys that would be silently ignored are refused (here `[policy] effective_date`)."""
    from geofence.errors import PolicyError
    from geofence.policy import parse_policy

    with pytest.raises(PolicyError, match="effective_date"):
        parse_policy('[policy]\nid = "p"\neffective_date = 2026-01-01\n')
