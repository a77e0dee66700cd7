"""Parity with the real edge programs, started on loopback by the tests.

nginx and HAProxy loaded with the exports answer, for sampled addresses of both
families, exactly the action ``decide()`` gives; ``nft`` accepts the nftables export
(and applies it in a network namespace where the sandbox allows one).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from geofence.engine import Geofence
from geofence.export import compile_for_edge, export_table, verdict_table
from tests.export.conftest import (
    GENERATED,
    TODAY,
    ask_all,
    bundled,
    free_port,
    key_of,
    need,
    sample,
    serving,
    table,
)
from tests.policy.conftest import build_world, policy

#: Sampled addresses per family and export.
N = 10_000


def _expected(preset: str, addresses: list[str]) -> list[str]:
    with Geofence(bundled(), preset, today=lambda: TODAY) as gf:
        return [key_of(gf.decide(a)) for a in addresses]


def _mismatches(addresses: list[str], got: list[str], want: list[str]) -> list[str]:
    return [
        f"{a}: edge {g!r}, decide {w!r}"
        for a, g, w in zip(addresses, got, want, strict=True)
        if g != w
    ]


def _nginx_conf(tmp: Path, port: int, includes: dict[str, Path]) -> Path:
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / sub).mkdir(exist_ok=True)
    locations = "\n".join(
        f'        location = /{name} {{ default_type text/plain; return 200 "${name}_action"; }}'
        for name in includes
    )
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
daemon off;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    {"".join(f"include {p};" for p in includes.values())}
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
{locations}
    }}
}}
"""
    )
    return conf


@pytest.mark.parametrize("preset", ["us-ofac-comprehensive", "route-restricted-to-fallback"])
def test_nginx_geo_matches_decide(tmp_path: Path, preset: str) -> None:
    """The nginx geo export answers decide()'s action for 10,000 addresses per family.

    Both styles (CIDR and ``ranges``) in one nginx; the client address comes from
    X-Real-IP through the realip module, trusted from 127.0.0.1.
    """
    nginx = need("nginx")
    vt = table(preset)
    includes: dict[str, Path] = {}
    for style in ("cidr", "ranges"):
        name = f"gf_{style}"
        result = export_table(vt, "nginx", name=name, nginx_style=style, generated_at=GENERATED)
        assert ("\n    ranges;\n" in result.text) == (style == "ranges")
        includes[name] = tmp_path / f"{name}.conf"
        includes[name].write_text(result.text)
    port = free_port()
    conf = _nginx_conf(tmp_path, port, includes)
    check = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    addresses = sample(vt, 4, N, seed=4) + sample(vt, 6, N, seed=6)
    want = _expected(preset, addresses)
    command = [nginx, "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")]
    with serving(command, port, tmp_path / "nginx.out"):
        for name in includes:
            got = ask_all(port, f"/{name}", addresses)
            bad = _mismatches(addresses, got, want)
            assert not bad, f"{name}: {len(bad)} mismatches, e.g. {bad[:5]}"


def test_haproxy_map_matches_decide(tmp_path: Path) -> None:
    """The HAProxy map export answers decide()'s action for 10,000 addresses per family.

    ``map_ip`` on the source address set from X-Real-IP.
    """
    haproxy = need("haproxy")
    preset = "us-ofac-comprehensive"
    vt = table(preset)
    result = export_table(vt, "haproxy", name="geofence", generated_at=GENERATED)
    mapfile = tmp_path / "geofence.map"
    mapfile.write_text(result.text)
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        f"""
global
    maxconn 64
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend edge
    bind 127.0.0.1:{port}
    http-request set-src hdr(x-real-ip)
    http-request set-var(txn.geofence_action) src,map_ip({mapfile},{result.listing.default})
    http-request return status 200 content-type text/plain lf-string "%[var(txn.geofence_action)]"
"""
    )
    check = subprocess.run(
        [haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    addresses = sample(vt, 4, N, seed=44) + sample(vt, 6, N, seed=66)
    want = _expected(preset, addresses)
    with serving([haproxy, "-db", "-f", str(cfg)], port, tmp_path / "haproxy.out"):
        got = ask_all(port, "/", addresses)
    bad = _mismatches(addresses, got, want)
    assert not bad, f"{len(bad)} mismatches, e.g. {bad[:5]}"


def test_nftables_accepts_export(tmp_path: Path) -> None:
    """``nft -c -f`` accepts the nftables export, and a network namespace loads it.

    In a fresh namespace (when the sandbox allows one) it loads twice (the
    flush-and-add replace), and the deny set holds exactly the exported elements.
    """
    nft = need("nft")
    vt = table("us-ofac-comprehensive")
    result = export_table(vt, "nftables", generated_at=GENERATED)
    path = tmp_path / "geofence.nft"
    path.write_text(result.text)
    check = subprocess.run(
        [nft, "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    if check.returncode != 0 and "Operation not permitted" in check.stderr:
        pytest.skip(f"nft -c needs CAP_NET_ADMIN here: {check.stderr.strip()}")
    assert check.returncode == 0, check.stderr
    ns = f"gf{uuid.uuid4().hex[:10]}"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        for _ in range(2):
            load = subprocess.run(
                ["ip", "netns", "exec", ns, nft, "-f", str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert load.returncode == 0, load.stderr
        listed = subprocess.run(
            ["ip", "netns", "exec", ns, nft, "-j", "list", "set", "inet", "geofence", "deny_v4"],
            capture_output=True,
            text=True,
            check=True,
        )
        elems = json.loads(listed.stdout)["nftables"][1]["set"]["elem"]
        assert len(elems) == result.entries["deny"][0]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_nginx_loads_the_top_of_ipv4(tmp_path: Path) -> None:
    """A listed 255.255.255.255 (a CIDR rule of its own) loads in both nginx styles.

    nginx cannot parse that address in a CIDR or a range: the CIDR style names it
    bare and answers decide()'s action; the ranges style gives it the default, as
    its header says. Every other address answers decide()'s action in both.
    """
    nginx = need("nginx")
    world = build_world()
    pol = policy(
        """
        [policy]
        id = "reserved-denied"
        on_reserved = "deny"
        [[rules]]
        id = "top"
        action = "challenge"
        cidrs = ["255.255.255.255/32"]
        [[rules]]
        id = "iran"
        action = "deny"
        jurisdictions = ["IR"]
        """
    )
    vt = verdict_table(compile_for_edge(pol, world, today=TODAY))
    auto = export_table(vt, "nginx", generated_at=GENERATED)
    assert "\n    ranges;\n" not in auto.text  # auto keeps the exact style here
    includes: dict[str, Path] = {}
    for style in ("cidr", "ranges"):
        name = f"gf_{style}"
        result = export_table(vt, "nginx", name=name, nginx_style=style, generated_at=GENERATED)
        includes[name] = tmp_path / f"{name}.conf"
        includes[name].write_text(result.text)
    assert '    255.255.255.255 "challenge";' in includes["gf_cidr"].read_text().splitlines()
    assert "cannot name 255.255.255.255" in includes["gf_ranges"].read_text()
    port = free_port()
    conf = _nginx_conf(tmp_path, port, includes)
    # realip refuses "255.255.255.255" itself (nginx's parser cannot read it, not even as
    # ::ffff:255.255.255.255), so the top address arrives as ::ffff:ffff:ffff, its
    # IPv4-mapped form in hex, which geo looks up as IPv4.
    addresses = [
        "::ffff:ffff:ffff",
        "255.255.255.254",
        "240.0.0.1",
        "224.0.0.1",
        "223.255.255.255",
        "0.0.0.0",
        "10.1.2.3",
        "1.0.3.1",
        "1.0.2.1",
        "::1",
        "2a01:1::1",
        "2a02::1",
        "::ffff:1.0.3.1",
    ]
    with Geofence(world, pol, today=lambda: TODAY) as gf:
        want = [key_of(gf.decide(a)) for a in addresses]
    command = [nginx, "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")]
    with serving(command, port, tmp_path / "nginx.out"):
        got_cidr = ask_all(port, "/gf_cidr", addresses)
        got_ranges = ask_all(port, "/gf_ranges", addresses)
    assert got_cidr == want
    assert want[0] == "challenge"
    assert got_ranges[0] == "allow"  # the stated exception
    assert got_ranges[1:] == want[1:]
