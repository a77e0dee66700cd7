"""Tests of the bundled policy presets against hand-picked addresses of the test world."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest

from geofence.context import Context, Subject
from geofence.decision import Action
from geofence.engine import Geofence
from geofence.policy import Policy, load_policy, preset_names
from geofence.policy.parse import preset_path
from geofence.snapshot.reader import Snapshot
from tests.policy.conftest import ADDR, RESERVED, TUNNELS, UNKNOWN

MakeGf = Callable[..., Geofence]

PRESETS = (
    "us-ofac-comprehensive",
    "eu-uk-occupied-territories",
    "domestic-only",
    "route-restricted-to-fallback",
)


def _codes(p: Policy) -> set[str]:
    """Every jurisdiction code any rule of ``p`` names."""
    out: set[str] = set()
    for r in p.rules:
        for codes in (r.jurisdictions, r.not_jurisdictions, r.partial_jurisdictions):
            out |= codes or set()
    return out


def _ctx(*nationalities: str) -> Context:
    """A context whose subject has these verified nationalities."""
    return Context(subject=Subject(id="s", nationalities=frozenset(nationalities)))


# -- every preset --------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_is_documented(name: str) -> None:
    """Each preset loads, is dated, and every rule has a description and a citation."""
    assert name in preset_names()
    p = load_policy(name)
    assert p.id == name
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.version)
    assert p.description
    assert p.rules
    for rule in p.rules:
        assert rule.description.strip(), rule.id
        assert rule.citation.strip(), rule.id
    text = preset_path(name).read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert "NOT LEGAL ADVICE" in text
    assert re.search(r"[Rr]eviewed on \d{4}-\d{2}-\d{2}", text)
    assert "http" in text  # sources are linked


def test_domestic_only_loads_with_params() -> None:
    """domestic-only takes its home jurisdictions as a parameter."""
    p = load_policy("domestic-only", params={"home": ["GB"]})
    assert p.rules[1].not_jurisdictions == frozenset({"GB"})
    assert p.rules[2].subject.nationality_not == frozenset({"GB"})
    assert p.digest != load_policy("domestic-only").digest


def test_unverified_items_stay_out_of_the_ofac_preset() -> None:
    """Syria (revoked), Zaporizhzhia/Kherson (unverified for OFAC) and Russia are not encoded."""
    codes = _codes(load_policy("us-ofac-comprehensive"))
    assert codes == {"CU", "IR", "KP", "UA-43", "UA-40", "UA-14", "UA-09"}


def test_partial_regions_are_partial() -> None:
    """Regions that are only parts of an oblast are never encoded as whole subdivisions."""
    for name in ("us-ofac-comprehensive", "eu-uk-occupied-territories"):
        for rule in load_policy(name).rules:
            whole = rule.jurisdictions or frozenset()
            assert not whole & {"UA-14", "UA-09", "UA-23", "UA-65"}, rule.id


# -- US OFAC comprehensive ---------------------------------------------------------------------

OFAC_CASES = [
    ("ir", Action.DENY, "rule", "ofac-iran"),
    ("cu", Action.DENY, "rule", "ofac-cuba"),
    ("kp", Action.DENY, "rule", "ofac-north-korea"),
    ("ua_crimea", Action.DENY, "rule", "ofac-crimea"),
    ("ua_sevastopol", Action.DENY, "rule", "ofac-crimea"),
    ("ua_crimea6", Action.DENY, "rule", "ofac-crimea"),
    ("ir6", Action.DENY, "rule", "ofac-iran"),
    ("ua_donetsk", Action.CHALLENGE, "unresolved", "ofac-dnr-lnr"),
    ("ua_luhansk", Action.CHALLENGE, "unresolved", "ofac-dnr-lnr"),
    ("ua_nosub", Action.CHALLENGE, "unresolved", "ofac-crimea"),
    ("sy", Action.ALLOW, "default", None),
    ("ru", Action.ALLOW, "default", None),
    ("ua_kyiv", Action.ALLOW, "default", None),
    ("ua_zaporizhzhia", Action.ALLOW, "default", None),
    ("ua_kherson", Action.ALLOW, "default", None),
    ("us", Action.ALLOW, "default", None),
]


@pytest.mark.parametrize(("name", "action", "outcome", "rule_id"), OFAC_CASES)
def test_ofac(
    make_gf: MakeGf, name: str, action: Action, outcome: str, rule_id: str | None
) -> None:
    """Embargoed countries and Crimea are denied; DNR/LNR oblasts and unplaced UA challenged."""
    d = make_gf("us-ofac-comprehensive").decide(ADDR[name])
    assert (d.action, d.outcome, d.rule_id) == (action, outcome, rule_id)


def test_ofac_unresolved_reasons(make_gf: MakeGf) -> None:
    """The unresolved reasons say why: a partial region, or a missing subdivision."""
    gf = make_gf("us-ofac-comprehensive")
    assert gf.decide(ADDR["ua_donetsk"]).reasons[0] == "unresolved:partial:UA-14"
    assert gf.decide(ADDR["ua_luhansk"]).reasons[0] == "unresolved:partial:UA-09"
    assert gf.decide(ADDR["ua_nosub"]).reasons[0] == "unresolved:subdivision"


@pytest.mark.parametrize("tunnel", sorted(TUNNELS))
def test_ofac_tunnels(make_gf: MakeGf, tunnel: str) -> None:
    """An Iranian IPv4 address inside any IPv6 tunnel form is denied."""
    d = make_gf("us-ofac-comprehensive").decide(TUNNELS[tunnel](ADDR["ir"]))
    assert (d.action, d.rule_id, d.tunnel) == (Action.DENY, "ofac-iran", tunnel)


def test_ofac_fallbacks(make_gf: MakeGf) -> None:
    """Unknown and reserved addresses are allowed; a record without country is unresolved."""
    gf = make_gf("us-ofac-comprehensive")
    assert gf.decide(UNKNOWN).action is Action.ALLOW
    for address in RESERVED:
        assert gf.decide(address).action is Action.ALLOW
    d = gf.decide(ADDR["nocountry_vpn"])
    assert (d.action, d.reasons[0]) == (Action.CHALLENGE, "unresolved:country")


@pytest.mark.parametrize(
    ("day", "crimea", "donetsk"),
    [
        (dt.date(2014, 12, 18), Action.ALLOW, Action.ALLOW),
        (dt.date(2014, 12, 19), Action.DENY, Action.ALLOW),
        (dt.date(2022, 2, 20), Action.DENY, Action.ALLOW),
        (dt.date(2022, 2, 21), Action.DENY, Action.CHALLENGE),
    ],
)
def test_ofac_dates(make_gf: MakeGf, day: dt.date, crimea: Action, donetsk: Action) -> None:
    """The Crimea rule applies from EO 13685's date, the DNR/LNR rule from EO 14065's."""
    gf = make_gf("us-ofac-comprehensive", today=lambda: day)
    assert gf.decide(ADDR["ua_crimea"]).action is crimea
    assert gf.decide(ADDR["ua_donetsk"]).action is donetsk
    assert gf.decide(ADDR["ir"]).action is Action.DENY


# -- EU/UK occupied territories ----------------------------------------------------------------

EU_CASES = [
    ("ua_crimea", Action.DENY, "rule", "eu-uk-crimea"),
    ("ua_sevastopol", Action.DENY, "rule", "eu-uk-crimea"),
    ("ua_donetsk", Action.CHALLENGE, "unresolved", "eu-uk-donetsk-luhansk-ngca"),
    ("ua_luhansk", Action.CHALLENGE, "unresolved", "eu-uk-donetsk-luhansk-ngca"),
    ("ua_zaporizhzhia", Action.CHALLENGE, "unresolved", "eu-uk-zaporizhzhia-kherson-ngca"),
    ("ua_kherson", Action.CHALLENGE, "unresolved", "eu-uk-zaporizhzhia-kherson-ngca"),
    ("ua_nosub", Action.CHALLENGE, "unresolved", "eu-uk-crimea"),
    ("ua_kyiv", Action.ALLOW, "default", None),
    ("ir", Action.ALLOW, "default", None),
    ("ru", Action.ALLOW, "default", None),
]


@pytest.mark.parametrize(("name", "action", "outcome", "rule_id"), EU_CASES)
def test_eu_uk(
    make_gf: MakeGf, name: str, action: Action, outcome: str, rule_id: str | None
) -> None:
    """Crimea/Sevastopol are denied; the four oblasts with occupied parts are challenged."""
    d = make_gf("eu-uk-occupied-territories").decide(ADDR[name])
    assert (d.action, d.outcome, d.rule_id) == (action, outcome, rule_id)


@pytest.mark.parametrize(
    ("day", "kherson"),
    [(dt.date(2022, 10, 5), Action.ALLOW), (dt.date(2022, 10, 6), Action.CHALLENGE)],
)
def test_eu_uk_extension_date(make_gf: MakeGf, day: dt.date, kherson: Action) -> None:
    """Zaporizhzhia and Kherson are covered from the 6 Oct 2022 extension."""
    gf = make_gf("eu-uk-occupied-territories", today=lambda: day)
    assert gf.decide(ADDR["ua_kherson"]).action is kherson
    assert gf.decide(ADDR["ua_donetsk"]).action is Action.CHALLENGE


# -- domestic only ---------------------------------------------------------------------------

DOMESTIC_CASES = [
    # (address name, nationalities or None for no context, action, rule id)
    ("us", None, Action.CHALLENGE, "domestic-persons"),
    ("us", ("US",), Action.ALLOW, None),
    ("us", ("US", "IR"), Action.ALLOW, None),
    ("us", ("IR",), Action.DENY, "domestic-persons"),
    ("us", (), Action.CHALLENGE, "domestic-persons"),
    ("us6", ("US",), Action.ALLOW, None),
    ("gb", None, Action.DENY, "domestic-location"),
    ("gb", ("US",), Action.DENY, "domestic-location"),
    ("ir", ("US",), Action.DENY, "domestic-location"),
    ("pr", ("US",), Action.DENY, "domestic-location"),
    ("us_vpn", None, Action.CHALLENGE, "domestic-anonymiser"),
    ("us_vpn", ("US",), Action.CHALLENGE, "domestic-anonymiser"),
    ("de_tor", ("US",), Action.CHALLENGE, "domestic-anonymiser"),
    ("gb_proxy", None, Action.CHALLENGE, "domestic-anonymiser"),
    ("nocountry_vpn", None, Action.CHALLENGE, "domestic-anonymiser"),
    ("de_relay", ("US",), Action.DENY, "domestic-location"),
    ("de_hosting", ("US",), Action.DENY, "domestic-location"),
]


@pytest.mark.parametrize(("name", "nationalities", "action", "rule_id"), DOMESTIC_CASES)
def test_domestic_only(
    make_gf: MakeGf,
    name: str,
    nationalities: tuple[str, ...] | None,
    action: Action,
    rule_id: str | None,
) -> None:
    """Home addresses with home nationals pass; abroad is denied; anonymisers challenged."""
    gf = make_gf("domestic-only")
    ctx = None if nationalities is None else _ctx(*nationalities)
    d = gf.decide(ADDR[name], ctx)
    assert (d.action, d.rule_id) == (action, rule_id)


def test_domestic_only_unresolved_reasons(make_gf: MakeGf) -> None:
    """A home address without a subject, or without a nationality, is unresolved: challenge."""
    gf = make_gf("domestic-only")
    assert gf.decide(ADDR["us"]).reasons == ("unresolved:subject", "rule:domestic-persons")
    no_nat = gf.decide(ADDR["us"], _ctx())
    assert no_nat.reasons == ("unresolved:subject.nationality", "rule:domestic-persons")
    assert no_nat.outcome == "unresolved"


def test_domestic_only_fallbacks(make_gf: MakeGf) -> None:
    """Unknown and reserved addresses are challenged even for a home national."""
    gf = make_gf("domestic-only")
    us = _ctx("US")
    unknown = gf.decide(UNKNOWN, us)
    assert (unknown.action, unknown.outcome) == (Action.CHALLENGE, "unknown")
    for address in RESERVED:
        d = gf.decide(address, us)
        assert (d.action, d.outcome) == (Action.CHALLENGE, "reserved")


def test_domestic_only_with_params(make_gf: MakeGf) -> None:
    """With home = GB, British addresses and nationals pass and American ones do not."""
    gf = make_gf(load_policy("domestic-only", params={"home": ["GB"]}))
    assert gf.decide(ADDR["gb"], _ctx("GB")).action is Action.ALLOW
    assert gf.decide(ADDR["gb"], _ctx("US")).rule_id == "domestic-persons"
    assert gf.decide(ADDR["us"], _ctx("GB")).rule_id == "domestic-location"
    assert gf.decide(ADDR["gb_proxy"], _ctx("GB")).rule_id == "domestic-anonymiser"


def test_domestic_only_with_territories(make_gf: MakeGf) -> None:
    """Territories with their own ISO code are domestic only when listed in home."""
    gf = make_gf(load_policy("domestic-only", params={"home": ["US", "PR"]}))
    assert gf.decide(ADDR["pr"], _ctx("US")).action is Action.ALLOW
    assert gf.decide(ADDR["us"], _ctx("US")).action is Action.ALLOW


# -- route to a fallback tier -------------------------------------------------------------------

ROUTE_CASES = [
    ("ru", Action.ROUTE, "fallback-tier", "fallback-ru-it-services"),
    ("by", Action.ROUTE, "fallback-tier", "fallback-by-software"),
    ("ru_vpn", Action.CHALLENGE, None, "fallback-anonymiser"),
    ("us_vpn", Action.CHALLENGE, None, "fallback-anonymiser"),
    ("de_tor", Action.CHALLENGE, None, "fallback-anonymiser"),
    ("gb_proxy", Action.CHALLENGE, None, "fallback-anonymiser"),
    ("de_relay", Action.ALLOW, None, None),
    ("us", Action.ALLOW, None, None),
    ("ir", Action.ALLOW, None, None),
]


@pytest.mark.parametrize(("name", "action", "route", "rule_id"), ROUTE_CASES)
def test_route_to_fallback(
    make_gf: MakeGf, name: str, action: Action, route: str | None, rule_id: str | None
) -> None:
    """Russia and Belarus are routed to the fallback tier; anonymisers are challenged first."""
    d = make_gf("route-restricted-to-fallback").decide(ADDR[name])
    assert (d.action, d.route, d.rule_id) == (action, route, rule_id)


def test_route_fallbacks(make_gf: MakeGf) -> None:
    """Unknown addresses are routed to the fallback tier; reserved ones are allowed."""
    gf = make_gf("route-restricted-to-fallback")
    d = gf.decide(UNKNOWN)
    assert (d.action, d.route, d.outcome) == (Action.ROUTE, "fallback-tier", "unknown")
    assert gf.decide("10.1.2.3").action is Action.ALLOW


@pytest.mark.parametrize(
    ("day", "action"),
    [(dt.date(2024, 9, 11), Action.ALLOW), (dt.date(2024, 9, 12), Action.ROUTE)],
)
def test_route_dates(make_gf: MakeGf, day: dt.date, action: Action) -> None:
    """Russia is routed from the OFAC determination's effective date (12 Sep 2024)."""
    gf = make_gf("route-restricted-to-fallback", today=lambda: day)
    assert gf.decide(ADDR["ru"]).action is action


# -- the bundled data ------------------------------------------------------------------------
# Addresses checked against DB-IP City Lite 2026-09-01 (the default's subdivision source):
# 91.217.78.1 "RU / Crimea" (Feodosiya), 109.110.64.1 "RU / Sebastopol City",
# 91.200.0.1 "UA / Kyiv City", 194.44.0.1 "UA / Lviv", 37.57.0.1 "UA / Kharkiv".


@pytest.fixture(scope="module")
def bundled_ofac() -> Geofence:
    """The bundled snapshot under us-ofac-comprehensive."""
    return Geofence(
        Snapshot.default(),
        "us-ofac-comprehensive",
        today=lambda: dt.date(2026, 11, 27),
        max_age=None,  # the bundled data's age is not what these tests are about
    )


@pytest.mark.parametrize(
    ("address", "code", "said"),
    [
        ("91.217.78.1", "UA-43", "RU / Crimea"),
        ("109.110.64.1", "UA-40", "RU / Sebastopol City"),
    ],
)
def test_bundled_ofac_denies_crimea_filed_under_ru(
    bundled_ofac: Geofence, address: str, code: str, said: str
) -> None:
    """Addresses DB-IP files under RU in Crimea or Sevastopol are denied, and say why."""
    d = bundled_ofac.decide(address)
    assert d.action is Action.DENY
    assert (d.country, d.subdivision, d.rule_id) == ("UA", code, "ofac-crimea")
    assert f"territory:dbip-city-lite: {said} -> {code}" in d.reasons


@pytest.mark.parametrize(
    ("address", "code"),
    [("91.200.0.1", "UA-30"), ("194.44.0.1", "UA-46"), ("37.57.0.1", "UA-63")],
)
def test_bundled_ofac_allows_kyiv_lviv_kharkiv(
    bundled_ofac: Geofence, address: str, code: str
) -> None:
    """Kyiv, Lviv and Kharkiv have their oblast, so the preset allows them (no challenge)."""
    d = bundled_ofac.decide(address)
    assert d.subdivision == code
    assert d.action is Action.ALLOW
    assert d.outcome == "default"


def test_bundled_territory_records_all_decide_by_their_territory(bundled_ofac: Geofence) -> None:
    """Every bundled record set by the territory table carries its code and is consistent."""
    snap = bundled_ofac.snapshot
    overridden = [r for r in snap.records if r.territory is not None]
    assert {r.subdivision for r in overridden} >= {"UA-43", "UA-40", "UA-14", "UA-09"}
    for rec in overridden:
        assert rec.country == "UA"
        assert rec.territory.endswith(f"-> {rec.subdivision}")  # type: ignore[union-attr]


def test_bundled_snapshot_has_two_country_sources_and_disputes() -> None:
    """The default merges DB-IP and iptoasn countries and records their disagreements."""
    snap = Snapshot.default()
    names = [s.name for s in snap.sources]
    assert {"dbip-country-lite", "iptoasn-country", "agreement", "territories"} <= set(names)
    disputed = [r for r in snap.records if r.alt_country is not None]
    assert disputed
    assert all(r.alt_country != r.country and r.dispute for r in disputed)
