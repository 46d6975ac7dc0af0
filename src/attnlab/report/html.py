"""``report.html``: the tour's results as one self-contained static page (no server, no network, no JavaScript).

Input is the ``results.json`` structure::

    {"attnlab_version": str, "budget": str, "created": str, "seconds": float, "machine": {str: scalar},
     "claims": [ClaimResult.to_json(), ...]}

Each claim's ``criterion`` (what its verdict is judged by, fixed before the tour ran) is shown next to its verdict,
and an inconclusive verdict's ``decides`` (what would decide it) under it; results saved before criteria were
recorded show that none was. A claim entry that failed (or was not run) is ``{"number", "title", "statement",
"error"}`` (and its criterion) and is rendered as a visible failed section. Figures (``file`` relative to the
output directory) are embedded as base64 ``data:`` URIs, so the page still works when copied alone; a figure that
is missing or not an image becomes a visible note, never a broken ``<img>``. Every piece of text is HTML-escaped.
The page references no URL outside itself.
"""

from __future__ import annotations

import base64
import json
import math
import os
import tempfile
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

__all__ = ["format_number", "render", "render_saved"]

REPORT_NAME = "report.html"
RESULTS_NAME = "results.json"
NUMBERS_MAX_CHARS = 20_000  # raw measurements beyond this are cut in the page (results.json keeps them all)

# status -> (css class, badge text). "failed" is not a verdict: the claim's experiment raised or never ran.
_BADGES = {
    "holds": ("holds", "holds"),
    "does not hold": ("fails", "does not hold"),
    "inconclusive": ("inconclusive", "inconclusive"),
    "failed": ("failed", "failed to run"),
}

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg-alt: #f6f8fa;
        --holds: #1a7f37; --fails: #cf222e; --inconclusive: #6e7781; --failed: #9a6700; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 62rem; padding: 1.5rem 1.25rem 4rem; color: var(--fg); background: #fff;
       font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.7rem; margin: 0 0 .25rem; }
h2 { font-size: 1.3rem; margin: 0 0 .5rem; }
h3 { font-size: 1rem; margin: 1.25rem 0 .4rem; }
a { color: #0969da; }
.meta { color: var(--muted); font-size: .9rem; margin: 0 0 1.25rem; }
.meta span + span::before { content: " · "; }
section.claim { border: 1px solid var(--line); border-left: 6px solid var(--inconclusive); border-radius: 6px;
                padding: 1rem 1.25rem; margin: 1.5rem 0; }
section.claim.holds { border-left-color: var(--holds); }
section.claim.fails { border-left-color: var(--fails); }
section.claim.failed { border-left-color: var(--failed); background: #fff8c5; }
.statement { font-size: 1.02rem; margin: 0 0 .75rem; white-space: pre-line; }
.verdict { display: flex; gap: .75rem; align-items: baseline; margin: .5rem 0 1rem; }
.verdict .because { white-space: pre-line; }
.criterion, .decides { margin: -.5rem 0 1rem; font-size: .92rem; }
.criterion { color: var(--muted); }
.criterion strong, .decides strong { color: var(--fg); }
.badge { display: inline-block; padding: .1rem .6rem; border-radius: 1rem; color: #fff; font-weight: 600;
         font-size: .85rem; white-space: nowrap; background: var(--inconclusive); }
.badge.holds { background: var(--holds); }
.badge.fails { background: var(--fails); }
.badge.failed { background: var(--failed); }
.scroll { overflow-x: auto; margin: .5rem 0 1rem; }
table { border-collapse: collapse; font-size: .9rem; }
caption { caption-side: top; text-align: left; color: var(--muted); padding: 0 0 .3rem; }
th, td { border: 1px solid var(--line); padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: var(--bg-alt); }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.none { color: var(--muted); text-align: center; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
figure { margin: 1rem 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .3rem; }
.missing { border: 2px dashed var(--failed); color: var(--failed); padding: .75rem; font-weight: 600; }
pre { background: var(--bg-alt); border: 1px solid var(--line); border-radius: 4px; padding: .5rem .75rem;
      overflow-x: auto; font-size: .85rem; margin: .3rem 0; }
pre.error { background: #fff; border-color: var(--failed); white-space: pre-wrap; }
details { margin: .75rem 0 0; }
summary { cursor: pointer; color: var(--muted); }
.footer { color: var(--muted); font-size: .85rem; }
"""


def render(results: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``out_dir/report.html`` from the ``results.json`` structure and return its path.

    Figures are read from ``out_dir / figure["file"]`` and embedded; the file is replaced atomically.
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be the results.json mapping; received {type(results).__name__}")
    claims = results.get("claims", [])
    if not isinstance(claims, list) or not all(isinstance(c, Mapping) for c in claims):
        raise TypeError("results['claims'] must be a list of claim dicts (ClaimResult.to_json() or an error entry)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = sorted(claims, key=_sort_key)
    page = _page(results, ordered, out_dir)
    target = out_dir / REPORT_NAME
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def render_saved(out_dir: str | os.PathLike[str]) -> Path:
    """Re-render ``out_dir/report.html`` from ``out_dir/results.json`` (the saved results only)."""
    path = Path(out_dir) / RESULTS_NAME
    with path.open(encoding="utf-8") as f:
        return render(json.load(f), out_dir)


# --- page structure -------------------------------------------------------------------------------------------


def _page(results: Mapping[str, Any], claims: list[Mapping[str, Any]], out_dir: Path) -> str:
    title = "attnlab tour: attention and self-attention, measured"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request, not even to a server that is not there
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{_e(title)}</h1>",
        _meta(results),
        "</header>",
        "<main>",
        _summary(claims),
        *(_section(claim, out_dir) for claim in claims),
        "</main>",
        _footer(results),
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def _meta(results: Mapping[str, Any]) -> str:
    items = []
    if results.get("attnlab_version") is not None:
        items.append(f"attnlab {_e(results['attnlab_version'])}")
    if results.get("budget") is not None:
        items.append(f"budget <strong>{_e(results['budget'])}</strong>")
    if results.get("created") is not None:
        items.append(f"created {_e(results['created'])}")
    if isinstance(results.get("seconds"), int | float):
        items.append(f"total {_e(_duration(results['seconds']))}")
    return '<p class="meta">' + "".join(f"<span>{item}</span>" for item in items) + "</p>"


def _summary(claims: list[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    rows = []
    for claim in claims:
        status = _status(claim)
        counts[status] = counts.get(status, 0) + 1
        number = _number(claim)
        seconds = claim.get("seconds")
        rows.append(
            "<tr>"
            f'<td class="num">{_e(number)}</td>'
            f'<td><a href="#claim-{_e(number)}">{_e(claim.get("title", ""))}</a></td>'
            f"<td>{_badge(status)}</td>"
            f'<td class="num">{_e(_duration(seconds)) if isinstance(seconds, int | float) else ""}</td>'
            "</tr>"
        )
    plural = {"holds": "hold", "does not hold": "do not hold", "inconclusive": "inconclusive", "failed": "failed"}
    order = [*plural, *sorted(set(counts) - set(plural))]
    tally = ", ".join(f"{counts[s]} {plural.get(s, s)}" for s in order if s in counts)
    return (
        '<nav id="summary">'
        '<div class="scroll"><table>'
        f"<caption>{len(claims)} claims: {_e(tally) if tally else 'none recorded'}</caption>"
        "<thead><tr><th>#</th><th>claim</th><th>verdict</th><th>time</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody>"
        "</table></div>"
        "</nav>"
    )


def _section(claim: Mapping[str, Any], out_dir: Path) -> str:
    number = _number(claim)
    status = _status(claim)
    css = _BADGES.get(status, ("inconclusive", status))[0]
    parts = [
        f'<section class="claim {css}" id="claim-{_e(number)}">',
        f"<h2>Claim {_e(number)}. {_e(claim.get('title', ''))}</h2>",
        f'<p class="statement">{_e(claim.get("statement", ""))}</p>',
    ]
    if "error" in claim:
        parts.append(f'<div class="verdict">{_badge("failed")}<span>the experiment did not complete</span></div>')
        parts.append(_criterion(claim))
        parts.append(f'<pre class="error">{_e(claim["error"])}</pre>')
    else:
        verdict = claim.get("verdict") or {}
        because = verdict.get("because", "") if isinstance(verdict, Mapping) else ""
        decides = verdict.get("decides", "") if isinstance(verdict, Mapping) else ""
        parts.append(f'<div class="verdict">{_badge(status)}<span class="because">{_e(because)}</span></div>')
        parts.append(_criterion(claim))
        if decides:
            parts.append(f'<p class="decides"><strong>What would decide it:</strong> {_e(decides)}</p>')
        parts.extend(_table(table) for table in claim.get("tables") or [])
        parts.extend(_figure(figure, out_dir) for figure in claim.get("figures") or [])
    if claim.get("command"):
        parts.append("<h3>Reproduce</h3>")
        parts.append(f"<pre><code>{_e(claim['command'])}</code></pre>")
    details = []
    if isinstance(claim.get("seconds"), int | float):
        details.append(f"took {_duration(claim['seconds'])}")
    if claim.get("budget"):
        details.append(f"budget {claim['budget']}")
    if details:
        parts.append(f'<p class="meta">{_e(", ".join(details))}</p>')
    if claim.get("numbers"):
        parts.append(_numbers(claim["numbers"]))
    parts.append("</section>")
    return "\n".join(parts)


def _criterion(claim: Mapping[str, Any]) -> str:
    criterion = claim.get("criterion")
    text = _e(criterion) if criterion else "none recorded (these results predate criteria; rerun the tour)"
    return f'<p class="criterion"><strong>Criterion:</strong> {text}</p>'


def _table(table: Mapping[str, Any]) -> str:
    columns = list(table.get("columns") or [])
    head = "".join(f"<th>{_e(column)}</th>" for column in columns)
    body = []
    for row in table.get("rows") or []:
        body.append("<tr>" + "".join(_cell(value) for value in row) + "</tr>")
    caption = f"<caption>{_e(table['caption'])}</caption>" if table.get("caption") else ""
    rows = "".join(body)
    return f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _figure(figure: Mapping[str, Any], out_dir: Path) -> str:
    name = str(figure.get("file", ""))
    caption = figure.get("caption", "")
    uri, problem = _data_uri(out_dir, name)
    if uri is None:
        body = f'<div class="missing">figure {_e(problem)}: {_e(name)}</div>'
    else:
        body = f'<img src="{uri}" alt="{_e(caption or name)}">'
    return f"<figure>{body}<figcaption>{_e(caption)}</figcaption></figure>"


def _numbers(numbers: Any) -> str:
    text = json.dumps(numbers, indent=1, sort_keys=True, default=str, allow_nan=True)
    if len(text) > NUMBERS_MAX_CHARS:
        text = text[:NUMBERS_MAX_CHARS] + f"\n... ({len(text) - NUMBERS_MAX_CHARS} more characters in results.json)"
    return f"<details><summary>raw measurements</summary><pre>{_e(text)}</pre></details>"


def _footer(results: Mapping[str, Any]) -> str:
    machine = results.get("machine")
    if not isinstance(machine, Mapping) or not machine:
        return '<footer class="footer"><p>Rendered from results.json.</p></footer>'
    items = "".join(f"<tr><th>{_e(key)}</th>{_cell(value)}</tr>" for key, value in machine.items())
    return (
        '<footer class="footer"><h3>Machine</h3>'
        f'<div class="scroll"><table><tbody>{items}</tbody></table></div>'
        "<p>Rendered from results.json.</p></footer>"
    )


# --- small pieces ---------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """HTML-escape any value (quotes too, so the result is safe inside attributes)."""
    return escape(str(value), quote=True)


def _sort_key(claim: Mapping[str, Any]) -> tuple[int, float, str]:
    number = claim.get("number")
    if isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number):
        return (0, float(number), "")
    return (1, 0.0, str(number))


def _number(claim: Mapping[str, Any]) -> str:
    number = claim.get("number", "?")
    return str(int(number)) if isinstance(number, float) and number.is_integer() else str(number)


def _status(claim: Mapping[str, Any]) -> str:
    if "error" in claim:
        return "failed"
    verdict = claim.get("verdict")
    status = verdict.get("status") if isinstance(verdict, Mapping) else None
    return str(status) if status else "inconclusive"


def _badge(status: str) -> str:
    css, text = _BADGES.get(status, ("inconclusive", status))
    return f'<span class="badge {css}">{_e(text)}</span>'


def _cell(value: Any) -> str:
    if value is None:
        return '<td class="none">–</td>'
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int | float):
        return f'<td class="num">{_e(format_number(value))}</td>'
    if isinstance(value, list | dict):
        return f"<td>{_e(json.dumps(value, default=str))}</td>"
    return f"<td>{_e(value)}</td>"


def format_number(value: int | float) -> str:
    """Integers exactly (thousands separated from 10,000); floats to 4 significant digits, large ones whole."""
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if 1e4 <= magnitude < 1e12:
        return f"{value:,.0f}"
    if 1e-4 <= magnitude < 1e4:
        return f"{value:.4g}"
    mantissa, exponent = f"{value:.3e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


_IMAGE_TYPES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def _data_uri(out_dir: Path, name: str) -> tuple[str | None, str]:
    """The figure as a ``data:`` URI, or ``(None, why)`` when it cannot be shown."""
    if not name:
        return None, "missing"
    path = out_dir / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "missing"
    except OSError as error:
        return None, f"unreadable ({error.strerror or type(error).__name__})"
    mime = next((mime for magic, mime in _IMAGE_TYPES if data.startswith(magic)), None)
    if mime is None and path.suffix.lower() == ".svg" and b"<svg" in data[:4096]:
        mime = "image/svg+xml"
    if mime is None:
        return None, "not an image" if data else "empty"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", ""
