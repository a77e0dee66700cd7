"""The HTML report in a real headless Chromium: it renders, offline, without script errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from geofence.audit import AuditOptions, run_audit
from geofence.audit.report import render_report, write_report
from geofence.engine import Geofence
from tests.audit import chromium

pytestmark = pytest.mark.skipif(
    chromium.CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


def _line(ip: str, minute: int, user: str) -> str:
    return (
        f"{ip} - {user} [01/Mar/2026:10:{minute:02d}:00 +0000] "
        f'"GET /v1 HTTP/1.1" 200 1 "-" "agent" "-"\n'
    )


@pytest.fixture(scope="module")
def summary(engine: Geofence, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """An audit with every section filled: actions, denials, signals, failures, hostile text."""
    ips = ["5.1.2.3", "8.8.8.8", "46.1.1.1", "185.0.1.1", "31.0.0.9", "2a00::1", "41.0.0.1"]
    lines = [_line(ips[i % len(ips)], i % 60, ("alice", "bob", "-")[i % 3]) for i in range(600)]
    lines.append("<script>alert('x')</script></script><img src=x onerror=alert(1)>\n")
    lines.append(_line("<b>bold</b>", 1, "-"))
    path = tmp_path_factory.mktemp("report") / "access.log"
    path.write_text("".join(lines))
    return run_audit(engine, [str(path)], AuditOptions())


def test_report_renders_in_chromium(summary: dict[str, object], tmp_path: Path) -> None:
    """Rendered, no console or recorded errors, charts and tables present, screenshot drawn."""
    report = tmp_path / "report.html"
    write_report(summary, report)
    shot = tmp_path / "report.png"
    page = chromium.load(report, screenshot=shot)
    assert page.console == [], page.console
    assert page.dom_errors is None
    assert page.rendered
    for section in ("timeline", "countries", "actions", "denied", "workarounds", "problems"):
        assert f'<section id="{section}">' in page.dom
    assert page.dom.count("<rect") > 20  # bars of the charts
    places = summary["map"]
    assert isinstance(places, list)
    assert len(places) >= 5
    assert page.dom.count('<g class="place">') == len(places)  # the world view
    assert "country_hopping" in page.dom  # the workaround view
    assert "sanctioned" in page.dom  # the denying rule in the denied-traffic table
    # Hostile log text is shown as text, never as markup.
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in page.dom
    assert "<img src=x" not in page.dom
    width, height, distinct = chromium.png_stats(shot)
    assert (width, height) == (1200, 2000)
    assert distinct > 50, "the screenshot is blank"


def test_report_is_self_contained(summary: dict[str, object]) -> None:
    """No URL to load anything from; a CSP forbids network loads; the data cannot end the script."""
    text = render_report(summary)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text)
    assert "default-src 'none'" in text
    data = text.split('<script id="audit-data" type="application/json">', 1)[1]
    data = data.split("</script>", 1)[0]
    assert "<" not in data


def test_harness_detects_a_script_error_in_the_report(
    summary: dict[str, object], tmp_path: Path
) -> None:
    """A deliberately broken report: the harness sees the error (DOM record and console)."""
    broken = render_report(summary).replace(
        "  workarounds();\n", "  workarounds();\n  noSuchFunction();\n"
    )
    assert "noSuchFunction" in broken
    path = tmp_path / "broken.html"
    path.write_text(broken)
    page = chromium.load(path)
    assert page.dom_errors is not None
    assert "noSuchFunction" in page.dom_errors
    assert any("noSuchFunction" in line for line in page.console), page.console
    assert not page.rendered


def test_harness_detects_an_error_on_any_page(tmp_path: Path) -> None:
    """A page without the report's error hook: the console channel alone catches the throw."""
    path = tmp_path / "plain.html"
    path.write_text("<!DOCTYPE html><p>hi</p><script>throw new Error('deliberate-boom')</script>")
    page = chromium.load(path)
    assert any("deliberate-boom" in line for line in page.console), page.console
