"""The one-page evidence summary of a bundle, and its HTML rendering. Pure.

The summary is computed from a verified bundle only
(:func:`translog.formats.bundle_verify.bundle_summary`),
so ``translog verify`` recomputes it and refuses a bundle whose summary says anything else:
every count, the period, the checkpoints covered and the verification statement are checked,
not trusted. ``render_html`` makes the page an auditor files in the working papers.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from typing import Any

from translog.formats.event_schema import describe

FORMAT = "translog-summary/v1"


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds."""
    when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def summarize(
    *,
    origin: str,
    from_ms: int,
    to_ms: int,
    start: int,
    end: int,
    closed: bool,
    checkpoints: Sequence[Mapping[str, Any]],
    payloads: Mapping[str, int],
    query: Mapping[str, Any] | None,
    selected: Sequence[Mapping[str, Any] | None],
) -> dict[str, Any]:
    """The summary of a verified bundle; ``selected`` holds the events of the selection (or of
    every entry with a readable event when there is no query), None for erased ones."""
    events = [e for e in selected if e is not None]
    final = checkpoints[-1]
    statement = (
        f"All {end - start} entries with a log timestamp in the period are in the bundle "
        f"(indexes {start} to {end - 1 if end > start else start}), proven complete against "
        f"the signed checkpoint of size {final['size']}"
        + (", and the period is closed." if closed else "; later entries could still fall in it.")
    )
    if query is not None:
        statement += (
            f" {len(selected)} of them match the query; every revealed payload was checked "
            "against it (entries outside the selection are withheld)."
        )
    return {
        "format": FORMAT,
        "origin": origin,
        "period": {"from": from_ms, "to": to_ms, "from_utc": iso(from_ms), "to_utc": iso(to_ms)},
        "query": None if query is None else dict(query),
        "entries_in_period": end - start,
        "index_range": [start, end],
        "matched": len(selected),
        "erased": len(selected) - len(events),
        "payloads": dict(payloads),
        "counts": describe(events),
        "checkpoints": [dict(c) for c in checkpoints],
        "verification": {
            "result": "verified",
            "complete": True,
            "closed": closed,
            "statement": statement,
        },
    }


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;color:#111}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.05em;margin:1.2em 0 .3em}
table{border-collapse:collapse;width:100%} td,th{border:1px solid #bbb;padding:.25em .5em;
text-align:left;vertical-align:top} th{background:#f2f2f2;width:14em}
.ok{color:#0a6b2d;font-weight:600} code{font-size:.9em;word-break:break-all}
@media print{body{margin:0}}
"""


def _rows(pairs: Sequence[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _counts(counts: Mapping[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{html.escape(k)}: {n}" for k, n in counts.items())


def render_html(summary: Mapping[str, Any]) -> str:
    """A self-contained one-page HTML document of the summary (prints on one page)."""
    period = summary["period"]
    query = summary["query"]
    ver = summary["verification"]
    query_text = (
        "the whole period"
        if query is None
        else html.escape(", ".join(f"{k}={v}" for k, v in query.items()))
    )
    cps = "".join(
        f"<tr><td>{c['size']}</td><td><code>{html.escape(c['root'])}</code></td>"
        f"<td>{html.escape(', '.join(c.get('cosigners', [])) or '-')}</td></tr>"
        for c in summary["checkpoints"]
    )
    counts = summary["counts"]
    payloads = summary["payloads"]
    head = _rows(
        [
            ("Log", f"<code>{html.escape(summary['origin'])}</code>"),
            ("Period (UTC)", f"{period['from_utc']} to {period['to_utc']} (inclusive)"),
            ("Selection", query_text),
            ("Entries in the period", str(summary["entries_in_period"])),
            ("Index range", f"[{summary['index_range'][0]}, {summary['index_range'][1]})"),
            ("Matching events", f"{summary['matched']} ({summary['erased']} erased)"),
            ("By action", _counts(counts["action"])),
            ("By outcome", _counts(counts["outcome"])),
            ("By category", _counts(counts["category"])),
            ("Payloads", _counts(payloads)),
        ]
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<title>translog evidence summary</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>Audit evidence summary</h1>"
        f"<p class=ok>Verification: {html.escape(ver['result'])}</p>"
        f"<p>{html.escape(ver['statement'])}</p>"
        f"<table>{head}</table>"
        "<h2>Checkpoints covered</h2>"
        f"<table><tr><th>size</th><th>root hash</th><th>witnesses</th></tr>{cps}</table>"
        "<p>Re-check offline with <code>translog verify BUNDLE --vkey VKEY</code>: it "
        "recomputes every figure on this page from the signed data in the bundle.</p>"
        "</body></html>\n"
    )
