"""The audit report: one self-contained HTML file that opens offline.

The page carries the summary as JSON and a small script of our own
(``report.js`` beside this module) that draws the charts as SVG: actions over
time, top countries, actions and rules, denied traffic by place with its top
networks and ASNs, workaround signals, and the lines that were not decided.
Nothing is fetched: a Content-Security-Policy forbids every network load, so a
report that worked once works on an air-gapped laptop.

Errors in the page's script are recorded on the document element
(``data-errors``) by a handler installed before anything else runs, and a
finished render sets ``data-rendered="1"``: the tests load the report in a
headless Chromium and check both.
"""

from __future__ import annotations

import html
import json
import os
from importlib.resources import files
from typing import Any

__all__ = ["render_report", "write_report"]

_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #212121; background: #fafafa; }
header { background: #263238; color: #fff; padding: 16px 24px; }
header h1 { margin: 0; font-size: 20px; }
#subtitle { opacity: .8; }
main { padding: 8px 24px 40px; max-width: 1100px; }
section { background: #fff; border: 1px solid #e0e0e0; border-radius: 6px;
  padding: 8px 16px 16px; margin: 16px 0; }
h2 { font-size: 17px; margin: 8px 0; }
h3 { font-size: 15px; margin: 12px 0 4px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin-top: 16px; }
.card { background: #fff; border: 1px solid #e0e0e0; border-radius: 6px; padding: 10px 16px;
  min-width: 140px; }
.big { font-size: 22px; font-weight: 600; }
.chart { width: 100%; height: auto; font-size: 12px; }
.axis { fill: #616161; font-size: 11px; }
.legend label { margin-right: 14px; cursor: pointer; }
.swatch { display: inline-block; width: 10px; height: 10px; margin: 0 4px; }
table { border-collapse: collapse; margin: 6px 0; font-size: 13px; }
th { text-align: left; cursor: pointer; background: #eceff1; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; vertical-align: top; }
td { white-space: pre-wrap; word-break: break-all; max-width: 520px; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.pair { display: flex; gap: 24px; flex-wrap: wrap; }
.note { color: #616161; }
.error { color: #c62828; }
.empty { color: #9e9e9e; }
"""

# Installed first: records any script error (and rejected promise) on the document
# element, where a headless browser's DOM dump shows it.
_ERROR_HOOK = """
(function () {
  function record(text) {
    var root = document.documentElement;
    var seen = root.getAttribute("data-errors");
    root.setAttribute("data-errors", (seen ? seen + "\\n" : "") + text);
  }
  window.addEventListener("error", function (e) {
    record((e.message || "error") + " at " + (e.lineno || "?") + ":" + (e.colno || "?"));
  });
  window.addEventListener("unhandledrejection", function (e) { record(String(e.reason)); });
})();
"""


def _script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (no ``</``, no line separators)."""
    text = json.dumps(value, default=str, ensure_ascii=False, allow_nan=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def render_report(summary: dict[str, Any], *, title: str = "geofence traffic audit") -> str:
    """The report page for an audit summary (see :func:`geofence.audit.run_audit`)."""
    script = files("geofence.audit").joinpath("report.js").read_text(encoding="utf-8")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<script>{_ERROR_HOOK}</script>
<style>{_STYLE}</style>
</head>
<body>
<header><h1>{html.escape(title)}</h1><div id="subtitle"></div></header>
<main id="main"><noscript>This report draws its charts with JavaScript.</noscript></main>
<script id="audit-data" type="application/json">{_script_json(summary)}</script>
<script>{script}</script>
</body>
</html>
"""


def write_report(summary: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write :func:`render_report` to ``path`` (UTF-8), replacing the file atomically."""
    target = os.fspath(path)
    tmp = f"{target}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(render_report(summary))
    os.replace(tmp, target)
