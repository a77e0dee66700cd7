"""Real access logs: an nginx started on loopback writes them for the tests.

The server listens on a free 127.0.0.1 port and logs every request in three
formats at once: nginx's stock ``main`` format (combined plus
``"$http_x_forwarded_for"``), Apache/nginx ``combined``, and JSON lines
(``escape=json``). Requests carry ``X-Forwarded-For`` and Basic credentials
(nginx logs the user name as ``$remote_user``), so the logs look like those of
an nginx behind a load balancer.
"""

from __future__ import annotations

import base64
import http.client
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_CONF = r"""
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" '
                    '"$http_user_agent" "$http_x_forwarded_for"';
    log_format jsonl escape=json '{{"remote_addr":"$remote_addr","time":"$time_iso8601",'
                    '"remote_user":"$remote_user","http_x_forwarded_for":"$http_x_forwarded_for",'
                    '"request":"$request","status":$status,"agent":"$http_user_agent"}}';
    server {{
        listen 127.0.0.1:{port};
        access_log {dir}/main.log main;
        access_log {dir}/combined.log combined;
        access_log {dir}/json.log jsonl;
        location / {{ return 200 "ok\n"; }}
    }}
}}
"""


@dataclass(frozen=True)
class Request:
    """One request sent to the logging nginx."""

    xff: str | None = None
    user: str | None = None
    path: str = "/v1/models"
    agent: str = "test-client/1.0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_nginx_logs(directory: Path, requests: Sequence[Request]) -> dict[str, Path]:
    """Start nginx, send ``requests`` in order, stop it; returns the log files by format.

    Raises:
        FileNotFoundError: nginx is not installed.
        RuntimeError: nginx did not start.
    """
    executable = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(executable).exists():
        raise FileNotFoundError("nginx")
    port = _free_port()
    conf = directory / "nginx.conf"
    conf.write_text(_CONF.format(dir=directory, port=port))
    process = subprocess.Popen(
        [
            executable,
            "-p",
            str(directory),
            "-c",
            str(conf),
            "-e",
            str(directory / "error.log"),
            "-g",
            "daemon off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"nginx did not start: {process.stderr.read() if process.stderr else ''!r}"
                    ) from None
                time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for r in requests:
            headers = {"User-Agent": r.agent}
            if r.xff is not None:
                headers["X-Forwarded-For"] = r.xff
            if r.user is not None:
                token = base64.b64encode(f"{r.user}:secret".encode()).decode()
                headers["Authorization"] = f"Basic {token}"
            conn.request("GET", r.path, headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        conn.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
    return {
        "nginx": directory / "main.log",
        "combined": directory / "combined.log",
        "jsonl": directory / "json.log",
    }
