"""Audits of real logs: nginx writes them (stock ``main``, ``combined``, JSON), plus CSV.

The client address comes from X-Forwarded-For through the trusted-proxy setup,
as in the middleware: the test nginx sees every request from 127.0.0.1, which
is configured as the trusted proxy, so the client is the right-most untrusted
address of the header.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from geofence.audit import AuditOptions, FieldNames, run_audit
from geofence.engine import Geofence
from geofence.signals.proxy import TrustedProxies
from tests.audit.helpers import accounted, counts, expected_actions
from tests.audit.nginx_logs import Request, write_nginx_logs

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
    reason="nginx is not installed (apt-get install nginx)",
)

# (X-Forwarded-For as sent, the client it resolves to behind 127.0.0.1 and 10.0.0.0/8)
_TRAFFIC = [
    ("5.1.2.3", "5.1.2.3"),
    ("31.0.4.4", "31.0.4.4"),
    ("8.8.8.8, 10.1.2.3", "8.8.8.8"),
    ("spoofed, 41.2.3.4", "41.2.3.4"),
    ("46.1.1.1", "46.1.1.1"),
    ("185.0.7.7", "185.0.7.7"),
    ("2a00::9", "2a00::9"),
    ("[2001:4860::1]:443", "2001:4860::1"),
    ("23.9.9.9", "23.9.9.9"),
    ("99.1.2.3", "99.1.2.3"),
]
_TRUSTED = TrustedProxies(cidrs=["127.0.0.1/32", "10.0.0.0/8"])


@pytest.fixture(scope="module")
def nginx_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    requests = [
        Request(xff=xff, user=("alice", "bob", None)[i % 3], agent=f'agent "{i}"')
        for i, (xff, _) in enumerate(_TRAFFIC * 7)
    ]
    requests.append(Request())  # no X-Forwarded-For: the peer is the client
    return write_nginx_logs(tmp_path_factory.mktemp("nginx"), requests)


def _clients() -> list[str]:
    return [client for _, client in _TRAFFIC * 7] + ["127.0.0.1"]


@pytest.mark.parametrize("fmt", ["nginx", "jsonl", "auto"])
def test_nginx_main_and_json(engine: Geofence, nginx_logs: dict[str, Path], fmt: str) -> None:
    """Every line decided on its X-Forwarded-For client; counts equal decide() per client."""
    for log in ("nginx", "jsonl"):
        if fmt not in ("auto", log):
            continue
        s = run_audit(engine, [str(nginx_logs[log])], AuditOptions(format=fmt, trusted=_TRUSTED))
        assert s["lines"] == len(_clients()) == accounted(s)
        assert s["unparsed"] == 0, s["unparsed_reasons"]
        assert counts(s["by_action"]) == expected_actions(engine, _clients())
        assert s["distinct_addresses"] == len(set(_clients()))
        codes = {c["code"] for c in s["client_signals"]}
        assert "header_malformed" in codes  # "spoofed" is not an address


def test_untrusted_peer_ignores_the_header(engine: Geofence, nginx_logs: dict[str, Path]) -> None:
    """With nobody trusted, the peer (127.0.0.1) is every line's client; headers are counted."""
    s = run_audit(engine, [str(nginx_logs["nginx"])], AuditOptions(format="nginx"))
    assert counts(s["by_rule"]) == {"(reserved)": len(_clients())}
    untrusted = {c["code"]: c["lines"] for c in s["client_signals"]}["header_untrusted"]
    assert untrusted == len(_clients()) - 1


def test_combined(engine: Geofence, nginx_logs: dict[str, Path]) -> None:
    """The combined format has no X-Forwarded-For: the peer decides (reserved loopback)."""
    s = run_audit(engine, [str(nginx_logs["combined"])], AuditOptions(format="combined"))
    assert s["lines"] == s["decided"] == len(_clients())
    assert counts(s["by_rule"]) == {"(reserved)": len(_clients())}
    assert s["timeline"]["bins"], "nginx time stamps give a timeline"


def test_users_feed_the_workaround_view(engine: Geofence, nginx_logs: dict[str, Path]) -> None:
    """$remote_user is the subject: alice and bob hop countries within seconds."""
    s = run_audit(engine, [str(nginx_logs["nginx"])], AuditOptions(trusted=_TRUSTED))
    work = s["workarounds"]
    assert work is not None
    assert work["subjects"] == 2
    assert work["requests"] == sum(1 for i in range(len(_TRAFFIC) * 7) if i % 3 != 2)
    hopping = work["signals"]["country_hopping"]
    assert hopping["events"] > 0
    assert {t["subject"] for t in hopping["top_subjects"]} == {"alice", "bob"}


@pytest.mark.parametrize("fmt", ["csv", "auto"])
def test_csv(engine: Geofence, tmp_path: Path, fmt: str) -> None:
    """A CSV export with a header: fields by name, quoted values, ISO times."""
    path = tmp_path / "export.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "client_ip", "user_id", "x_forwarded_for", "path"])
        for i, (xff, _) in enumerate(_TRAFFIC * 3):
            w.writerow([f"2026-03-01T10:{i:02d}:00Z", "10.9.9.9", f"u{i % 4}", xff, "/a,b"])
    s = run_audit(engine, [str(path)], AuditOptions(format=fmt, trusted=_TRUSTED))
    assert s["headers"] == 1
    assert s["lines"] == len(_TRAFFIC) * 3 + 1 == accounted(s)
    assert counts(s["by_action"]) == expected_actions(engine, [c for _, c in _TRAFFIC * 3])
    assert s["untimed"] == 0


def test_field_overrides(engine: Geofence, tmp_path: Path) -> None:
    """--ip-field/--time-field/--user-field name keys the defaults do not know (dotted paths)."""
    path = tmp_path / "custom.jsonl"
    path.write_text(
        '{"req": {"peer": "5.1.2.3"}, "when": "2026-01-01T00:00:00+01:00", "acct": "x"}\n'
        '{"req": {"peer": "46.1.1.1"}, "when": 1767222000000, "acct": "x"}\n'
    )
    fields = FieldNames.with_overrides(ip="req.peer", time="when", user="acct")
    s = run_audit(engine, [str(path)], AuditOptions(format="jsonl", fields=fields))
    assert counts(s["by_action"]) == expected_actions(engine, ["5.1.2.3", "46.1.1.1"])
    assert s["untimed"] == 0
    assert s["workarounds"]["requests"] == 2


@pytest.mark.parametrize("fmt", ["auto", "nginx"])
def test_combined_user_agent_is_not_a_forwarding_header(
    engine: Geofence, nginx_logs: dict[str, Path], fmt: str
) -> None:
    """A combined log read as auto/nginx: the last quoted field (the agent) is not X-Forwarded-For."""
    s = run_audit(engine, [str(nginx_logs["combined"])], AuditOptions(format=fmt, trusted=_TRUSTED))
    assert s["decided"] == len(_clients())
    assert counts(s["by_rule"]) == {"(reserved)": len(_clients())}
    assert s["client_signals"] == []
