"""Tests of geofence.snapshot.reader: round trips, corrupt files, sharing across threads and fork."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import json
import os
import random
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.errors import DataAgeWarning, InvalidAddressError, SnapshotError
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.snapshot.build import build_snapshot, write_atomic
from geofence.snapshot.format import (
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    SECTION,
    SECTION_TAGS,
    align8,
)
from geofence.snapshot.partition import TUNNEL_BY_ID
from geofence.snapshot.reader import GAP, Snapshot
from geofence.sources.base import RangeEntry, Source
from tests.strategies import addresses, ipv4_ints, make_source, source_sets

BUILT_AT = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
DATA_DATE = dt.date(2025, 5, 20)
_VERSION_OFFSET = 8  # format_version follows the 8-byte magic (see format.py)

Opener = Callable[[bytes], Snapshot]


def _cidr(text: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(text)
    return net.version, int(net.network_address), int(net.broadcast_address)


def _entry(cidr: str, **fields: object) -> RangeEntry:
    version, first, last = _cidr(cidr)
    return RangeEntry(version, first, last, NetworkRecord(**fields))  # type: ignore[arg-type]


def _sample_sources() -> list[Source]:
    country = make_source(
        "country",
        [
            _entry("8.8.8.0/24", country="US", registered_country="US"),
            _entry("5.5.0.0/16", country="UA", subdivision="UA-43", city="Simferopol"),
            _entry("2a00::/16", country="DE", latitude=52.5, longitude=13.4, accuracy_km=50),
        ],
        data_date=DATA_DATE,
        version="2025-05",
        license="CC-BY-4.0",
        attribution="Example attribution",
        url="https://example.invalid/country",
    )
    kinds = make_source(
        "kinds",
        [
            _entry("8.8.8.0/25", kinds=NetworkKind.HOSTING, provider="Example Cloud"),
            _entry("2a00:1::/32", kinds=NetworkKind.VPN | NetworkKind.TOR, asn=64512),
        ],
        data_date=DATA_DATE + dt.timedelta(days=3),
        license="CC0-1.0",
    )
    return [country, kinds]


@functools.cache
def _sample() -> bytes:
    """A small valid snapshot with both families, kinds, subdivisions and provenance."""
    return build_snapshot(_sample_sources(), built_at=BUILT_AT, name="sample")


def _open_file(data: bytes) -> Snapshot:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snap.gfs"
        path.write_bytes(data)
        return Snapshot.open(path)


#: Every way of opening bytes: from memory and from a file.
OPENERS: dict[str, Opener] = {"bytes": Snapshot.from_bytes, "file": _open_file}


def _state(snap: Snapshot) -> tuple[object, ...]:
    """Everything observable about a snapshot, for equality checks."""
    return (
        snap.digest,
        snap.meta,
        snap.records,
        snap.sources,
        list(snap.ranges(4)),
        list(snap.ranges(6)),
    )


# -- a hand-written encoder following docs/format.md, used to craft files ----------------------


def _sections(data: bytes) -> dict[bytes, bytes]:
    """Split a snapshot into its sections by reading the section table."""
    count = HEADER.unpack_from(data, 0)[4]
    out: dict[bytes, bytes] = {}
    for k in range(count):
        tag, _, offset, length = SECTION.unpack_from(data, HEADER.size + SECTION.size * k)
        out[tag] = data[offset : offset + length]
    return out


def _encode(sections: dict[bytes, bytes], *, version: int = FORMAT_VERSION) -> bytes:
    """Lay out sections per the spec: header, table, 8-aligned zero-padded sections."""
    offset = align8(HEADER.size + SECTION.size * len(SECTION_TAGS))
    table = bytearray()
    body = bytearray()
    for tag in SECTION_TAGS:
        blob = sections[tag]
        table += SECTION.pack(tag, 0, offset, len(blob))
        body += blob + bytes(align8(len(blob)) - len(blob))
        offset += align8(len(blob))
    after = bytes(table) + bytes(align8(len(table) + HEADER.size) - HEADER.size - len(table))
    after += bytes(body)
    header = HEADER.pack(
        MAGIC,
        version,
        0,
        HEADER.size,
        len(SECTION_TAGS),
        0,
        HEADER.size + len(after),
        hashlib.sha256(after).digest(),
    )
    return header + after


def _redigest(data: bytes) -> bytes:
    """Recompute the header digest so that a hand-made change passes the checksum."""
    fields = list(HEADER.unpack_from(data, 0))
    fields[-1] = hashlib.sha256(data[HEADER.size :]).digest()
    return HEADER.pack(*fields) + data[HEADER.size :]


def _with(**changes: bytes) -> bytes:
    """The sample snapshot with some sections replaced, checksum recomputed."""
    sections = _sections(_sample())
    for tag, blob in changes.items():
        sections[tag.encode()] = blob
    return _encode(sections)


def _recs_with(index: int, value: object) -> bytes:
    """The sample's RECS with field ``index`` of the first record replaced."""
    rows = json.loads(_sections(_sample())[b"RECS"])
    rows[0][index] = value
    return json.dumps(rows).encode()


def _i32(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, "little", signed=True) for v in values)


def test_spec_encoder_reproduces_builder_output() -> None:
    """Laying out the builder's sections by the written spec gives the builder's exact bytes."""
    data = _sample()
    assert _encode(_sections(data)) == data
    assert list(_sections(data)) == list(SECTION_TAGS)


# -- round trip --------------------------------------------------------------------------------


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    """A written snapshot reads back with its records, metadata, sources and identity."""
    data = _sample()
    path = tmp_path / "sample.gfs"
    write_atomic(data, path)
    snap = Snapshot.open(path)
    assert snap.origin == os.fspath(path)
    assert snap.meta["name"] == "sample"
    assert snap.data_date == DATA_DATE
    assert snap.built_at == BUILT_AT
    assert snap.sources == tuple(s.info for s in _sample_sources())
    assert snap.snapshot_id == hashlib.sha256(data[HEADER.size :]).hexdigest()[:16]
    assert snap.digest == HEADER.unpack_from(data, 0)[-1].hex()
    assert Snapshot.open(path).snapshot_id == snap.snapshot_id
    assert snap.has_subdivisions
    assert snap.lookup("8.8.8.1").record == NetworkRecord(
        country="US",
        registered_country="US",
        provider="Example Cloud",
        kinds=NetworkKind.HOSTING,
        sources=("country", "kinds"),
    )
    assert snap.lookup("8.8.8.200").record == NetworkRecord(
        country="US", registered_country="US", sources=("country",)
    )
    assert snap.lookup("5.5.1.1").record == NetworkRecord(
        country="UA", subdivision="UA-43", city="Simferopol", sources=("country",)
    )
    assert snap.lookup("2a00:1::1").record == NetworkRecord(
        country="DE",
        latitude=52.5,
        longitude=13.4,
        accuracy_km=50,
        asn=64512,
        kinds=NetworkKind.VPN | NetworkKind.TOR,
        sources=("country", "kinds"),
    )
    assert snap.lookup("9.9.9.9").record is None
    assert snap.lookup("9.9.9.9").record_id == GAP
    assert "sample" in repr(snap)


def test_all_openers_agree() -> None:
    """Opening a file and opening its bytes give identical snapshots."""
    states = {name: _state(opener(_sample())) for name, opener in OPENERS.items()}
    assert states["file"] == states["bytes"]


def test_bytearray_and_memoryview_are_accepted() -> None:
    """from_bytes takes any bytes-like object."""
    data = _sample()
    expected = _state(Snapshot.from_bytes(data))
    assert _state(Snapshot.from_bytes(bytearray(data))) == expected
    assert _state(Snapshot.from_bytes(memoryview(data))) == expected


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source_sets(max_sources=3))
def test_round_trip_property(entry_lists: list[list[RangeEntry]]) -> None:
    """For random builds, the file and in-memory readers agree and ids index the records."""
    sources = [make_source(f"s{i}", e) for i, e in enumerate(entry_lists)]
    data = build_snapshot(sources, force=True, built_at=BUILT_AT)
    from_bytes = Snapshot.from_bytes(data)
    assert _state(OPENERS["file"](data)) == _state(from_bytes)
    from_bytes.verify()
    used = {rid for v in (4, 6) for _, _, rid in from_bytes.ranges(v) if rid >= 0}
    # A record whose ranges all lie in special-purpose space is stored but unreachable.
    assert used <= set(range(len(from_bytes.records)))


def test_verify_passes_on_built_files() -> None:
    """verify() accepts what the builder writes, including an empty forced build."""
    Snapshot.from_bytes(_sample()).verify()
    Snapshot.from_bytes(build_snapshot([], force=True, built_at=BUILT_AT)).verify()


def test_lookup_accepts_all_input_forms() -> None:
    """Text, packed bytes, int+version and ParsedAddress look up the same segment."""
    from geofence.addr import parse_address

    snap = Snapshot.from_bytes(_sample())
    expected = snap.lookup("8.8.8.8")
    for value, version in (
        (b"\x08\x08\x08\x08", None),
        (0x08080808, 4),
        (parse_address("8.8.8.8"), None),
        (ipaddress.IPv4Address("8.8.8.8"), None),
    ):
        assert snap.lookup(value, version=version) == expected
    with pytest.raises(InvalidAddressError):
        snap.lookup("8.8.8.08")
    with pytest.raises(InvalidAddressError):
        snap.lookup(0x08080808)


# -- IPv4 and its IPv6 embeddings --------------------------------------------------------------


@settings(max_examples=200)
@given(ipv4_ints())
def test_ipv4_and_mapped_ipv6_give_same_lookup(value: int) -> None:
    """An IPv4 address and its ::ffff:, NAT64 and 6to4 forms find the same record and segment."""
    snap = _shared()
    text = str(ipaddress.IPv4Address(value))
    plain = snap.lookup(text)
    for form in (
        "::ffff:" + text,
        "64:ff9b::" + text,
        str(ipaddress.IPv6Address((0x2002 << 112) | (value << 80) | 1)),
    ):
        other = snap.lookup(form)
        assert (other.record, other.record_id, other.first, other.last) == (
            plain.record,
            plain.record_id,
            plain.first,
            plain.last,
        )
        assert other.address.special == plain.address.special


@functools.cache
def _shared() -> Snapshot:
    return Snapshot.from_bytes(_sample())


# -- corrupt, truncated and foreign files ------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_byte_flips_are_refused(data: st.DataObject) -> None:
    """Changing 1 to 8 bytes anywhere (header included) always gives SnapshotError."""
    original = _sample()
    positions = data.draw(
        st.lists(st.integers(0, len(original) - 1), min_size=1, max_size=8, unique=True)
    )
    corrupt = bytearray(original)
    for pos in positions:
        # A non-zero XOR mask always changes the byte, to any of the 255 other values.
        corrupt[pos] = original[pos] ^ data.draw(st.integers(1, 255))
    with pytest.raises(SnapshotError):
        Snapshot.from_bytes(bytes(corrupt))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_truncations_are_refused(data: st.DataObject) -> None:
    """Every proper prefix of a valid snapshot gives SnapshotError."""
    original = _sample()
    size = data.draw(st.integers(0, len(original) - 1))
    with pytest.raises(SnapshotError):
        Snapshot.from_bytes(original[:size])


@pytest.mark.parametrize("opener", OPENERS.values(), ids=OPENERS.keys())
def test_every_header_byte_is_checked(opener: Opener) -> None:
    """Flipping any single header byte is refused by every opener."""
    original = _sample()
    for pos in range(HEADER.size):
        corrupt = bytearray(original)
        corrupt[pos] ^= 0x01
        with pytest.raises(SnapshotError):
            opener(bytes(corrupt))


@pytest.mark.parametrize("opener", OPENERS.values(), ids=OPENERS.keys())
@pytest.mark.parametrize("size", [1, HEADER.size - 1, HEADER.size, HEADER.size + 1, -8, -1])
def test_truncated_files_are_refused(opener: Opener, size: int) -> None:
    """Files cut inside the header, the table or the last section are refused."""
    with pytest.raises(SnapshotError, match="truncated"):
        opener(_sample()[:size])


def _patch_version(data: bytes, version: int) -> bytes:
    return data[:_VERSION_OFFSET] + version.to_bytes(2, "little") + data[_VERSION_OFFSET + 2 :]


@pytest.mark.parametrize("opener", OPENERS.values(), ids=OPENERS.keys())
def test_future_version_is_refused(opener: Opener) -> None:
    """A file from a newer format version says so (nothing else recomputed)."""
    with pytest.raises(SnapshotError, match="newer"):
        opener(_patch_version(_sample(), FORMAT_VERSION + 1))
    with pytest.raises(SnapshotError, match="newer"):
        opener(_patch_version(_sample(), 0xFFFF))


@pytest.mark.parametrize("opener", OPENERS.values(), ids=OPENERS.keys())
def test_older_version_asks_for_rebuild(opener: Opener) -> None:
    """A file from an older format version asks for a rebuild."""
    for version in range(FORMAT_VERSION):
        with pytest.raises(SnapshotError, match="rebuild"):
            opener(_patch_version(_sample(), version))


@pytest.mark.parametrize("opener", OPENERS.values(), ids=OPENERS.keys())
def test_bad_magic_is_refused(opener: Opener) -> None:
    """Another file type is named as not a snapshot."""
    with pytest.raises(SnapshotError, match="magic"):
        opener(b"PK\x03\x04" + _sample()[4:])
    with pytest.raises(SnapshotError):
        opener(b"\x00" * 4096)


@pytest.mark.parametrize("opener", OPENERS.values(), ids=OPENERS.keys())
@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 8, b"garbage!"])
def test_trailing_bytes_are_refused(opener: Opener, extra: bytes) -> None:
    """Bytes after the last section are refused, even zero padding."""
    with pytest.raises(SnapshotError, match="trailing"):
        opener(_sample() + extra)


def test_empty_missing_and_directory_paths_are_refused(tmp_path: Path) -> None:
    """An empty file, a missing file and a directory each give SnapshotError."""
    empty = tmp_path / "empty.gfs"
    empty.write_bytes(b"")
    with pytest.raises(SnapshotError, match="empty"):
        Snapshot.open(empty)
    with pytest.raises(SnapshotError, match="cannot read"):
        Snapshot.open(tmp_path / "missing.gfs")
    with pytest.raises(SnapshotError):
        Snapshot.open(tmp_path)


def test_empty_bytes_are_refused() -> None:
    """Zero bytes are a truncated snapshot."""
    with pytest.raises(SnapshotError, match="truncated"):
        Snapshot.from_bytes(b"")


def _table_patch(entry: int, field: int, value: object) -> bytes:
    """The sample with one section-table field changed and the checksum recomputed."""
    data = _sample()
    at = HEADER.size + SECTION.size * entry
    fields = list(SECTION.unpack_from(data, at))
    fields[field] = value
    patched = data[:at] + SECTION.pack(*fields) + data[at + SECTION.size :]
    return _redigest(patched)


def _header_patch(field: int, value: object) -> bytes:
    data = _sample()
    fields = list(HEADER.unpack_from(data, 0))
    fields[field] = value
    return _redigest(HEADER.pack(*fields) + data[HEADER.size :])


# Files whose checksum is right but whose content is not: a buggy or hostile writer.
CRAFTED: dict[str, Callable[[], bytes]] = {
    "header flags": lambda: _header_patch(2, 1),
    "header size": lambda: _header_patch(3, 72),
    "header section count": lambda: _header_patch(4, len(SECTION_TAGS) + 1),
    "header reserved": lambda: _header_patch(5, 7),
    "table tag": lambda: _table_patch(0, 0, b"ATEM"),
    "table reserved": lambda: _table_patch(1, 1, 1),
    "table offset": lambda: _table_patch(
        1, 2, SECTION.unpack_from(_sample(), HEADER.size + SECTION.size)[2] + 8
    ),
    "table length": lambda: _table_patch(len(SECTION_TAGS) - 1, 3, 1 << 40),
    "meta not json": lambda: _with(META=b"{"),
    "meta not utf-8": lambda: _with(META=b"\xff\xfe"),
    "meta not an object": lambda: _with(META=b"[]"),
    "meta without sources": lambda: _with(META=b"{}"),
    "meta sources not a list": lambda: _with(META=b'{"sources": "x"}'),
    "meta source without name": lambda: _with(META=b'{"sources": [{"format": "x"}]}'),
    "meta source not an object": lambda: _with(META=b'{"sources": [1]}'),
    "meta bad data date": lambda: _with(
        META=b'{"sources": [{"name": "a", "data_date": "2025-13-45"}]}'
    ),
    "recs not a list": lambda: _with(RECS=b"{}"),
    "recs not json": lambda: _with(RECS=b"[[1,"),
    "record not a list": lambda: _with(RECS=b'["US"]'),
    "record too short": lambda: _with(RECS=b"[[null]]"),
    "country not a string": lambda: _with(RECS=_recs_with(0, 1)),
    "asn a string": lambda: _with(RECS=_recs_with(4, "15169")),
    "asn a bool": lambda: _with(RECS=_recs_with(4, True)),
    "accuracy a float": lambda: _with(RECS=_recs_with(10, 1.5)),
    "latitude a string": lambda: _with(RECS=_recs_with(8, "52")),
    "kinds negative": lambda: _with(RECS=_recs_with(7, -1)),
    "kinds unknown flag": lambda: _with(RECS=_recs_with(7, 1 << 20)),
    "kinds a string": lambda: _with(RECS=_recs_with(7, "vpn")),
    "source index too large": lambda: _with(RECS=_recs_with(11, [99])),
    "source index negative": lambda: _with(RECS=_recs_with(11, [-1])),
    "source index a bool": lambda: _with(RECS=_recs_with(11, [True])),
    "sources not a list": lambda: _with(RECS=_recs_with(11, 0)),
    "record id too large": lambda: _with(
        V4ID=_i32(*[10_000] * (len(_sections(_sample())[b"V4ID"]) // 4))
    ),
    "record id too small": lambda: _with(
        V6ID=_i32(*[-1000] * (len(_sections(_sample())[b"V6ID"]) // 4))
    ),
    "partial item": lambda: _with(V4ST=_sections(_sample())[b"V4ST"] + b"\x00"),
    "lengths differ": lambda: _with(V4ST=_sections(_sample())[b"V4ST"][:-4]),
    "empty ranges": lambda: _with(V4ST=b"", V4ID=b""),
    "not starting at 0": lambda: _with(V4ST=b"\x01" + _sections(_sample())[b"V4ST"][1:]),
}
if b"V4IX" in SECTION_TAGS:
    CRAFTED["index too short"] = lambda: _with(V4IX=_i32(0))
    CRAFTED["index out of range"] = lambda: _with(V4IX=_i32(*[1 << 30] * 65537))


def _one_changed(tag: str, at: int, value: int) -> bytes:
    """The sample with item ``at`` of an i32 section set to ``value`` (the rest valid)."""
    blob = bytearray(_sections(_sample())[tag.encode()])
    blob[4 * at : 4 * at + 4] = _i32(value)
    return _with(**{tag: bytes(blob)})


def _record_count() -> int:
    return len(json.loads(_sections(_sample())[b"RECS"]))


# Bounds are exact: one item just outside them, among valid ones, is refused.
CRAFTED["one record id one past the last"] = lambda: _one_changed("V4ID", 1, _record_count())
CRAFTED["one record id below the tunnel ids"] = lambda: _one_changed(
    "V6ID", 1, min(TUNNEL_BY_ID) - 1
)
CRAFTED["one IPv4 index item past the end"] = lambda: _one_changed(
    "V4IX", 300, len(_sections(_sample())[b"V4ST"]) // 4
)
CRAFTED["one IPv6 index item negative"] = lambda: _one_changed("V6IX", 9000, -1)


def test_bounds_at_their_edges_are_accepted() -> None:
    """The largest record id and the lowest tunnel id are valid: the bounds are not off by one."""
    last = _record_count() - 1
    snap = Snapshot.from_bytes(_one_changed("V4ID", 1, last))
    assert snap._v4_ids[1] == last
    snap = Snapshot.from_bytes(_one_changed("V6ID", 1, min(TUNNEL_BY_ID)))
    assert snap._v6_ids[1] == min(TUNNEL_BY_ID)


@pytest.mark.parametrize("opener", OPENERS.values(), ids=OPENERS.keys())
@pytest.mark.parametrize("case", CRAFTED.keys())
def test_crafted_files_with_valid_checksum_are_refused(opener: Opener, case: str) -> None:
    """Structure, record types and id bounds are validated on open, whatever the opener."""
    with pytest.raises(SnapshotError):
        opener(CRAFTED[case]())


def test_verify_detects_unordered_starts() -> None:
    """A file whose IPv4 starts go backwards is refused on open or by verify()."""
    sections = _sections(_sample())
    starts = [int.from_bytes(sections[b"V4ST"][i : i + 4], "little") for i in range(0, 16, 4)]
    swapped = [starts[0], starts[2], starts[1], starts[3]]
    patched = b"".join(s.to_bytes(4, "little") for s in swapped) + sections[b"V4ST"][16:]
    with pytest.raises(SnapshotError):
        Snapshot.from_bytes(_with(V4ST=patched)).verify()


def test_other_special_table_is_reapplied(caplog: pytest.LogCaptureFixture) -> None:
    """A file carved with another special-range table is re-carved on open, with a warning."""
    sections = _sections(_sample())
    meta = json.loads(sections[b"META"])
    meta["special_table"] = "0000000000000000"
    snap = Snapshot.from_bytes(_with(META=json.dumps(meta).encode()))
    assert "special-range table" in caplog.text
    expected = _shared()
    assert list(snap.ranges(4)) == list(expected.ranges(4))
    assert list(snap.ranges(6)) == list(expected.ranges(6))
    snap.verify()


# -- data age ----------------------------------------------------------------------------------


def test_check_age_fresh_data_passes_silently() -> None:
    """Data younger than max_age passes without a warning."""
    snap = Snapshot.from_bytes(_sample())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert snap.check_age(dt.timedelta(days=30), today=DATA_DATE + dt.timedelta(days=30))
    assert snap.age(DATA_DATE + dt.timedelta(days=5)) == dt.timedelta(days=5)


def test_check_age_warns_when_old() -> None:
    """Data older than max_age warns with DataAgeWarning and returns False."""
    snap = Snapshot.from_bytes(_sample())
    with pytest.warns(DataAgeWarning, match="31 days old"):
        assert not snap.check_age(dt.timedelta(days=30), today=DATA_DATE + dt.timedelta(days=31))


def test_check_age_raises_with_error() -> None:
    """With error=True old data raises SnapshotError."""
    snap = Snapshot.from_bytes(_sample())
    with pytest.raises(SnapshotError, match="days old"):
        snap.check_age(dt.timedelta(days=1), error=True, today=DATA_DATE + dt.timedelta(days=9))


def test_check_age_undated() -> None:
    """Undated data passes check_age unless error=True, as documented."""
    undated = make_source("a", [_entry("8.8.8.0/24", country="US")])
    snap = Snapshot.from_bytes(build_snapshot([undated], built_at=BUILT_AT))
    assert snap.data_date is None
    assert snap.age() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert snap.check_age(dt.timedelta(days=1))
    with pytest.raises(SnapshotError, match="no data date"):
        snap.check_age(dt.timedelta(days=1), error=True)


# -- sharing -----------------------------------------------------------------------------------


def _probe_addresses(count: int = 3000) -> list[tuple[int, int]]:
    rng = random.Random(1234)
    probes: list[tuple[int, int]] = []
    for _ in range(count):
        if rng.random() < 0.5:
            probes.append((4, rng.choice([0x08080800, 0x05050000, 0]) + rng.randrange(1 << 17)))
        else:
            base = rng.choice([0x2A00 << 112, 0x2A00_0001 << 96, 0xFFFF << 32])
            probes.append((6, base + rng.randrange(1 << 40)))
    return probes


def _answers(snap: Snapshot, probes: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    out = []
    for version, value in probes:
        result = snap.lookup(value, version=version)
        out.append((result.record_id, result.first, result.last))
    return out


def test_threads_share_one_snapshot() -> None:
    """Eight threads looking up on one Snapshot get the single-threaded answers."""
    snap = Snapshot.from_bytes(_sample())
    probes = _probe_addresses()
    expected = _answers(snap, probes)
    barrier = threading.Barrier(8)
    results: dict[int, list[tuple[int, int, int]]] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            barrier.wait()
            mine = probes[k:] + probes[:k]  # each thread starts elsewhere
            got = _answers(snap, mine)
            results[k] = got[len(probes) - k :] + got[: len(probes) - k]
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(results[k] == expected for k in range(8))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_snapshot_survives_fork(tmp_path: Path) -> None:
    """A forked child looks up on the parent's Snapshot (opened via mmap) with the same answers."""
    path = tmp_path / "sample.gfs"
    write_atomic(_sample(), path)
    snap = Snapshot.open(path)
    probes = _probe_addresses(500)
    expected = _answers(snap, probes)
    path.unlink()  # the child must not need the file
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = 0 if _answers(snap, probes) == expected else 1
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- lookups are total --------------------------------------------------------------------------


@settings(max_examples=200)
@given(addresses())
def test_lookup_is_total(address: tuple[int, int]) -> None:
    """Every address of both families finds a segment that contains it."""
    version, value = address
    result = _shared().lookup(value, version=version)
    assert result.first <= result.address.value <= result.last
    assert (result.record is None) == (result.record_id < 0)
    if result.address.special is not None:
        assert result.record is None


@given(address=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
@settings(max_examples=300, deadline=None)
def test_get_equals_lookup_record(
    bundled_snapshot: Snapshot, address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> None:
    """Snapshot.get(text) returns exactly lookup(text).record, for every address."""
    snap = bundled_snapshot
    text = str(address)
    assert snap.get(text) == snap.lookup(text).record


def _tie_addresses(snap: Snapshot, limit: int = 60) -> list[str]:
    """IPv6 texts around starts that share their high 64 bits with the previous start."""
    hi, lo = snap._v6_hi, snap._v6_lo
    out: list[str] = []
    for i in range(1, len(hi)):
        if hi[i] == hi[i - 1]:
            start = (hi[i] << 64) | lo[i]
            out += [str(ipaddress.IPv6Address(start + d)) for d in (-1, 0, 1)]
            if len(out) >= 3 * limit:
                break
    return out


def test_get_on_high_half_ties_equals_lookup(bundled_snapshot: Snapshot) -> None:
    """The inlined IPv6 search settles ties on the high half like lookup() does."""
    snap = bundled_snapshot
    texts = _tie_addresses(snap)
    assert len(texts) >= 30, "the bundled snapshot should contain such ties"
    for text in texts:
        assert snap.get(text) == snap.lookup(text).record, text


def test_get_rejects_invalid_text(bundled_snapshot: Snapshot) -> None:
    """Snapshot.get raises InvalidAddressError for a malformed address."""
    from geofence.errors import InvalidAddressError

    with pytest.raises(InvalidAddressError):
        bundled_snapshot.get("01.2.3.4")


@given(value=st.integers(min_value=0, max_value=(1 << 128) - 1))
@settings(max_examples=400, deadline=None)
def test_indexed_ipv6_search_equals_full_bisect(bundled_snapshot: Snapshot, value: int) -> None:
    """The V6IX-bounded IPv6 search finds the same segment as a bisect over all starts."""
    from geofence.snapshot.partition import locate6, locate6_indexed

    snap = bundled_snapshot
    hi, lo, index = snap._v6_hi, snap._v6_lo, snap._v6_index
    assert locate6_indexed(hi, lo, index, value >> 64, value & ((1 << 64) - 1)) == locate6(
        hi, lo, value
    )
