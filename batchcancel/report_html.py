"""`report RUN --format html`: one self-contained page a desk operator or a reviewer opens.

Everything the page shows comes from the audit database (batchcancel.audit.readback). The
charts are matplotlib figures rendered to SVG and inlined: no script, no stylesheet or font
from elsewhere, no image file beside it, so the page opens offline and prints as it shows.
matplotlib is imported here only, when a report is made (about 0.4 s that no other command
pays). Every text from the audit passes the redactor and is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from batchcancel.audit import readback
from batchcancel.audit.store import AuditStore
from batchcancel.outcomes import Outcome
from batchcancel.redact import Redactor
from batchcancel.report import iso
from batchcancel.report_charts import (
    ATTENTION_LIMIT,
    GOOD_OUTCOMES,
    Timeline,
    VenueLimit,
    busy_rate,
    collect_timelines,
    label_svg,
    peak_rate,
    venue_chart,
)

__all__ = ["ATTENTION_LIMIT", "VenueLimit", "render_html"]

_STYLE: Final = """
:root { color-scheme: light; }
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111;
       margin: 24px auto; max-width: 1200px; padding: 0 16px; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; border-bottom: 1px solid #ccc; padding-bottom: 2px; }
h3 { font-size: 14px; margin: 18px 0 4px; }
dl.header { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0; }
dl.header dt { font-weight: 600; color: #444; }
dl.header dd { margin: 0; word-break: break-all; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { border: 1px solid #ccc; padding: 3px 5px; text-align: right; vertical-align: top; }
table.wide { font-size: 11.5px; }
table.wide td { white-space: nowrap; }
table.wide th { font-size: 11px; }
th { background: #f2f2f2; font-weight: 600; }
td.text, th.text { text-align: left; }
tr.total td { font-weight: 700; background: #fafafa; }
.status-succeeded { color: #2e7d32; font-weight: 700; }
.status-attention, .status-stopped, .status-running, .status-loading { color: #c62828;
       font-weight: 700; }
.note { color: #555; }
.bad { color: #c62828; font-weight: 600; }
figure { margin: 6px 0 0; }
figure svg { width: 100%; height: auto; }
section.venue { break-inside: avoid; page-break-inside: avoid; }
@page { size: A4 landscape; margin: 12mm; }
@media print {
  body { margin: 0; max-width: none; font-size: 11px; }
  h2 { break-after: avoid; }
  tr { break-inside: avoid; }
}
"""


def _e(redactor: Redactor, value: object) -> str:
    """A value as HTML text: redacted, escaped; None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return html.escape(iso(value) or "")
    return html.escape(redactor.text(str(value)))


def _offset(value: datetime | None, origin: datetime | None) -> str:
    if value is None or origin is None:
        return "—"
    return f"{(value - origin).total_seconds():.2f} s"


def render_html(
    store: AuditStore,
    run_id: str,
    *,
    limits: Mapping[str, VenueLimit],
    limits_source: str,
    status: str,
    redactor: Redactor,
    generated_by: str,
) -> tuple[str, dict[str, Any]]:
    """The run's HTML report, and a few numbers about it (venues, render seconds)."""
    started = time.perf_counter()
    header = readback.run_header(store, run_id)
    stats = readback.venue_stats(store, run_id)
    digest = readback.run_digest(store, run_id)
    attention, attention_total = readback.attention_orders(store, run_id, limit=ATTENTION_LIMIT)
    timelines, origin = collect_timelines(store, run_id, list(stats))
    span = 0.0
    for line in timelines.values():
        ends = [*line.sent[-1:], *(e for _, e in line.pauses)]
        ends += [max(times) for times in line.decided.values() if times]
        span = max(span, *ends) if ends else span

    def e(value: object) -> str:
        return _e(redactor, value)

    run_start = header.sessions[0].started_at if header.sessions else header.created_at

    parts: list[str] = []
    add = parts.append
    key = f" (key {e(header.run_key)})" if header.run_key else ""
    add(f'<h1>batchcancel run <span class="mono" id="run-id">{e(header.id)}</span>{key}</h1>')
    add(
        f'<p>Status <span id="run-status" class="status-{e(status)}">{e(status)}</span> · '
        f"{e(header.command)} · {e(header.orders_total)} orders · worked "
        f"{header.working_seconds:.1f} s in {len(header.sessions)} session(s)</p>"
    )
    add('<dl class="header">')
    rows: list[tuple[str, str]] = [
        ("run id", e(header.id)),
        ("run key", e(header.run_key)),
        ("command", e(header.command) + (" (dry run)" if header.dry_run else "")),
        ("status", e(status)),
        ("started by", e(header.os_user)),
        ("where", f"{e(header.host)}, pid {e(header.pid)}"),
        ("created", e(header.created_at)),
        ("last session", f"{e(header.started_at)} to {e(header.finished_at)}"),
        ("duration", f"{header.working_seconds:.3f} s of work"),
        ("reason", e(header.reason) if header.reason else '<span class="note">none given</span>'),
        ("command line", f"<code>{e(header.command_line)}</code>"),
        ("source", f"<code>{e(header.source)}</code>"),
        ("options", f"<code>{e(header.options)}</code>"),
        ("version", e(header.version)),
        (
            "audit digest",
            f'<code id="digest">{e(digest)}</code>'
            if digest
            else '<span class="note" id="digest-absent">not recorded: this audit database '
            "keeps no hash chain for the run</span>",
        ),
        ("limits", e(limits_source)),
        (
            "orders loaded",
            f"{e(header.orders_total)} ({e(header.duplicates)} duplicate rows collapsed)",
        ),
    ]
    for name, value in rows:
        add(f"<dt>{html.escape(name)}</dt><dd>{value}</dd>")
    add("</dl>")

    if len(header.sessions) > 1 or header.sessions:
        add("<h2>Sessions</h2><table><thead><tr>")
        for name in (
            "#",
            "command",
            "user",
            "host",
            "pid",
            "started",
            "finished",
            "status",
            "version",
            "command line",
        ):
            cls = ' class="text"' if name in ("command", "user", "host", "command line") else ""
            add(f"<th{cls}>{name}</th>")
        add("</tr></thead><tbody>")
        for n, s in enumerate(header.sessions, 1):
            add(
                f'<tr><td>{n}</td><td class="text">{e(s.command)}</td>'
                f'<td class="text">{e(s.os_user)}</td><td class="text">{e(s.host)}</td>'
                f"<td>{e(s.pid)}</td><td>{e(s.started_at)}</td><td>{e(s.finished_at)}</td>"
                f"<td>{e(s.status)}</td><td>{e(s.version)}</td>"
                f'<td class="text"><code>{e(s.command_line)}</code></td></tr>'
            )
        add("</tbody></table>")

    outcomes = [o.value for o in Outcome]
    add(
        '<h2>Venues</h2><table id="venues" class="wide"><thead><tr><th class="text">venue</th>'
        "<th>orders</th>"
    )
    for outcome in outcomes:
        add(f"<th>{outcome.replace('_', '_<wbr>')}</th>")
    add(
        "<th>no outcome</th><th>requests</th><th>429s</th><th>first send</th>"
        "<th>last answer</th><th>achieved rate</th><th>peak 1 s</th><th>limit</th></tr>"
        "</thead><tbody>"
    )
    totals: Counter[str] = Counter()
    facts: dict[str, Any] = {"venues": {}}
    for venue, stat in stats.items():
        line = timelines.get(venue, Timeline())
        limit = limits.get(venue)
        rate = busy_rate(line.sent)
        peak = peak_rate(line.sent)
        share = (
            f" ({rate / limit.per_second:.0%})" if limit is not None and limit.per_second else ""
        )
        over = (
            ' class="bad"'
            if limit is not None
            and limit.per_second
            and peak > limit.rate_limit
            and limit.period <= 1.0
            else ""
        )
        add(
            f'<tr data-venue="{e(venue)}"><td class="text">{e(venue)}</td>'
            f'<td data-field="orders">{stat.orders}</td>'
        )
        for outcome in outcomes:
            n = stat.outcomes.get(outcome, 0)
            flag = ' class="bad"' if n and outcome not in GOOD_OUTCOMES else ""
            add(f'<td data-outcome="{outcome}"{flag}>{n}</td>')
        add(
            f'<td data-field="unfinished">{stat.unfinished}</td>'
            f'<td data-field="requests">{stat.request_total}</td>'
            f'<td data-field="rate_limited">{stat.rate_limited}</td>'
            f"<td>{_offset(stat.first_sent_at, run_start)}</td>"
            f"<td>{_offset(stat.last_answer_at, run_start)}</td>"
            f"<td>{rate:.1f}/s{share}</td><td{over}>{peak}</td>"
            f"<td>{e(limit.describe() if limit else 'not configured')}</td></tr>"
        )
        totals["orders"] += stat.orders
        totals["unfinished"] += stat.unfinished
        totals["requests"] += stat.request_total
        totals["rate_limited"] += stat.rate_limited
        for outcome in outcomes:
            totals[outcome] += stat.outcomes.get(outcome, 0)
        facts["venues"][venue] = {"orders": stat.orders, "requests": stat.request_total}
    add(
        '<tr class="total" data-venue=""><td class="text">all venues</td>'
        f'<td data-field="orders">{totals["orders"]}</td>'
    )
    for outcome in outcomes:
        add(f'<td data-outcome="{outcome}">{totals[outcome]}</td>')
    add(
        f'<td data-field="unfinished">{totals["unfinished"]}</td>'
        f'<td data-field="requests">{totals["requests"]}</td>'
        f'<td data-field="rate_limited">{totals["rate_limited"]}</td>'
        '<td colspan="5"></td></tr></tbody></table>'
    )
    add(
        '<p class="note">First send and last answer are counted from the start of the run\'s '
        "first session. The achieved rate is requests per second over the seconds in which "
        "the venue was sent anything; peak 1 s is the most requests sent within any one "
        "second.</p>"
    )

    add("<h2>Per venue: timeline and latency</h2>")
    if origin is None:
        add('<p class="note">No request was sent in this run.</p>')
    for venue in stats:
        line = timelines.get(venue, Timeline())
        svg, plotted = venue_chart(venue, line, limits.get(venue), span)
        svg = label_svg(svg, venue)
        facts["venues"][venue]["chart"] = plotted
        latency = (
            f"; latency p50 {plotted['p50']:.0f} ms, p95 {plotted['p95']:.0f} ms, "
            f"p99 {plotted['p99']:.0f} ms"
            if "p50" in plotted
            else ""
        )
        add(
            f'<section class="venue" data-venue="{e(venue)}"><h3>{e(venue)}</h3>'
            f'<figure class="chart" data-venue="{e(venue)}" '
            f'data-requests="{plotted["requests"]}" data-pauses="{plotted["pauses"]}" '
            f"data-outcomes='{html.escape(json.dumps(plotted['outcomes']))}'>{svg}"
            f'<figcaption class="note">{plotted["requests"]} requests in '
            f"{plotted['bins']} bins of {plotted['bin_seconds']:g} s; "
            f"{plotted['pauses']} 429 pause(s) shaded{latency}.</figcaption></figure></section>"
        )

    add(f'<h2>Orders that need a human (<span id="attention-total">{attention_total}</span>)</h2>')
    if not attention_total:
        add(
            '<p id="attention-none">None: every order was canceled, is gone, or was invalid '
            "input (invalid rows are listed in the CSV report).</p>"
        )
    else:
        add('<table id="attention"><thead><tr>')
        for name in (
            "venue",
            "order_id",
            "account_id",
            "symbol",
            "outcome",
            "reason",
            "attempts",
            "last HTTP",
            "last answer",
        ):
            cls = ' class="text"' if name not in ("attempts", "last HTTP") else ""
            add(f"<th{cls}>{name}</th>")
        add("</tr></thead><tbody>")
        for order in attention:
            add(
                f'<tr data-outcome="{e(order.outcome)}"><td class="text">{e(order.venue)}</td>'
                f'<td class="text mono">{e(order.order_id)}</td>'
                f'<td class="text">{e(order.account_id)}</td>'
                f'<td class="text">{e(order.symbol)}</td>'
                f'<td class="text">{e(order.outcome)}</td>'
                f'<td class="text">{e(order.reason)}</td><td>{order.attempts}</td>'
                f"<td>{e(order.last_http_status)}</td>"
                f'<td class="text">{e(order.last_answer_at)}</td></tr>'
            )
        add("</tbody></table>")
        if attention_total > len(attention):
            add(
                f'<p class="note">…and {attention_total - len(attention)} more; every order is '
                f"in <code>batchcancel report {e(header.id)} --format csv</code>.</p>"
            )
    add(
        '<h2>Appendix: every attempt</h2><p id="appendix">Every request and answer of this '
        "run is in the audit database. To get one record per attempt (sent and answered "
        "times, HTTP status, verdict, latency, an excerpt of the answer):</p>"
        f"<p><code>batchcancel report {e(header.id)} --format csv --attempts -o attempts.csv"
        "</code></p>"
        f'<p class="note">Generated {e(datetime.now().astimezone().isoformat(timespec="seconds"))}'
        f" by {e(generated_by)}. Times are UTC.</p>"
    )

    title = f"batchcancel run {header.id}"
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        # No request may leave the page: nothing but inline styles and inline SVG.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(redactor.text(title))}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )
    facts["render_seconds"] = time.perf_counter() - started
    facts["span_seconds"] = span
    facts["origin"] = iso(origin) if origin else None
    facts["first_session_start"] = iso(run_start + timedelta(0))
    return page, facts
