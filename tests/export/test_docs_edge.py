"""The deployment snippets in docs/edge.md run as written against real nginx and HAProxy.

Each tested block follows a ``<!-- tested: NAME -->`` marker in the document.
"""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from geofence.engine import Geofence
from geofence.export import export_table
from tests.export.conftest import (
    GENERATED,
    TODAY,
    ask_all,
    bundled,
    free_port,
    key_of,
    need,
    serving,
    table,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "edge.md"
IRAN = "2.176.0.1"  # TCI, Iran: denied by the OFAC preset, allowed by the EU/UK one
GERMANY = "46.4.0.1"


def block(name: str) -> str:
    """The fenced code block after ``<!-- tested: name -->`` in docs/edge.md."""
    found = re.search(
        rf"<!-- tested: {re.escape(name)} -->\n```\w*\n(.*?)```", DOC.read_text(), re.S
    )
    assert found, f"no tested block {name!r} in {DOC}"
    return found.group(1)


def test_python_api_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python API example runs as written (in a scratch directory)."""
    code = block("python-api").replace("data/policies/", f"{DOC.parents[1]}/data/policies/")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {})  # the documented example
    assert (tmp_path / "geofence.conf").read_text().startswith("# geofence edge export (nginx)")


def test_nginx_451_snippet(tmp_path: Path) -> None:
    """The http and server snippets give 451 to a denied address and pass an allowed one."""
    nginx = need("nginx")
    export = tmp_path / "geofence.conf"
    export.write_text(
        export_table(table("us-ofac-comprehensive"), "nginx", generated_at=GENERATED).text
    )
    http_part = block("nginx-http").replace("/etc/nginx/geofence.conf", str(export))
    server_part = block("nginx-server")
    port = free_port()
    conf = tmp_path / "nginx.conf"
    temp = "\n".join(
        f"    {kind}_temp_path {tmp_path}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"""
worker_processes 1;
pid {tmp_path}/nginx.pid;
daemon off;
events {{ worker_connections 16; }}
http {{
    access_log off;
{temp}
{http_part}
    server {{
        listen 127.0.0.1:{port};
{server_part}
        location / {{ return 200 "served $geofence_action\\n"; }}
    }}
}}
"""
    )
    errors = ["-e", str(tmp_path / "error.log")]
    command = [nginx, "-p", str(tmp_path), "-c", str(conf), *errors]
    with serving(command, port, tmp_path / "nginx.out"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            answers = {}
            for address in (IRAN, GERMANY):
                conn.request("GET", "/", headers={"X-Real-IP": address})
                response = conn.getresponse()
                answers[address] = (response.status, response.read().decode().strip())
        finally:
            conn.close()
    assert answers[IRAN] == (451, "Unavailable for legal reasons")
    assert answers[GERMANY] == (200, "served allow")


def test_haproxy_runtime_update(tmp_path: Path) -> None:
    """The runtime-API recipe swaps a running HAProxy's map from one export to another."""
    haproxy = need("haproxy")
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (.ci/run installs it with apt-get)")
    old = export_table(table("eu-uk-occupied-territories"), "haproxy", generated_at=GENERATED)
    new = export_table(table("us-ofac-comprehensive"), "haproxy", generated_at=GENERATED)
    assert old.listing.default == new.listing.default == "allow"
    live = tmp_path / "geofence.map"
    live.write_text(old.text)
    sock = tmp_path / "admin.sock"
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        f"""
global
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend edge
    bind 127.0.0.1:{port}
    http-request set-src hdr(x-real-ip)
    http-request set-var(txn.geofence_action) src,map_ip({live},allow)
    http-request return status 200 content-type text/plain lf-string "%[var(txn.geofence_action)]"
"""
    )
    probes = [IRAN, "2a01:5ec0::1", GERMANY, "176.36.0.1"]
    with serving([haproxy, "-db", "-f", str(cfg)], port, tmp_path / "haproxy.out"):
        before = ask_all(port, "/", probes)
        live.write_text(new.text)  # the export written over the loaded file
        script = f"sock='{sock}' map='{live}'\n" + block("haproxy-update")
        run = subprocess.run(
            ["sh", "-e", "-c", script], capture_output=True, text=True, timeout=120, check=False
        )
        assert run.returncode == 0, run.stderr
        after = ask_all(port, "/", probes)
    expected = {}
    for preset in ("eu-uk-occupied-territories", "us-ofac-comprehensive"):
        with Geofence(bundled(), preset, today=lambda: TODAY) as gf:
            expected[preset] = [key_of(gf.decide(a)) for a in probes]
    assert before == expected["eu-uk-occupied-territories"]
    assert after == expected["us-ofac-comprehensive"]
    assert before[:2] == ["allow", "allow"]  # Iran: the update must change these
    assert after[:2] == ["deny", "deny"]
