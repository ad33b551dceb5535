"""`report RUN --format html`: one self-contained page a desk operator or a reviewer opens.

Everything the page shows comes from the audit database (batchcancel.audit.readback). The
charts are matplotlib figures rendered to SVG and inlined: no script, no stylesheet or font
from elsewhere, no image file beside it, so the page opens offline and prints as it shows.
matplotlib is imported here only, when a report is made (about 0.4 s that no other command
pays). Every text from the audit passes the redactor and is HTML-escaped.
"""

from __future__ import annotations

import bisect
import html
import io
import json
import math
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from batchcancel.audit import readback
from batchcancel.audit.store import AuditStore
from batchcancel.outcomes import Outcome
from batchcancel.redact import Redactor
from batchcancel.report import iso

__all__ = ["ATTENTION_LIMIT", "VenueLimit", "render_html"]

ATTENTION_LIMIT: Final = 1000  # rows of the attention table; the rest are counted
MAX_BINS: Final = 150  # timeline bins at most; a long run gets wider ones
_WIDTHS: Final = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                  900.0, 1800.0, 3600.0)
LATENCY_BINS: Final = 40
CURVE_POINTS: Final = 1000  # points of a cumulative-outcome curve at most
OUTCOME_COLOURS: Final[Mapping[str, str]] = {
    "canceled": "#2e7d32",
    "cancel_pending": "#81c784",
    "already_closed": "#607d8b",
    "not_found": "#f9a825",
    "rejected": "#d84315",
    "invalid": "#8d6e63",
    "failed": "#c62828",
    "skipped": "#6a1b9a",
}
_GOOD: Final = frozenset(("canceled", "cancel_pending", "already_closed"))


@dataclass(frozen=True, slots=True)
class VenueLimit:
    """A venue's configured limit: `rate_limit` requests per `period` seconds (0: none)."""

    rate_limit: int
    period: float

    @property
    def per_second(self) -> float:
        """The limit as requests per second (0.0 when unthrottled)."""
        return self.rate_limit / self.period if self.rate_limit and self.period > 0 else 0.0

    def describe(self) -> str:
        """e.g. '20/s', or '250 per 10 s' for a longer window."""
        if not self.per_second:
            return "unthrottled"
        if self.period == 1:
            return f"{self.rate_limit}/s"
        return f"{self.rate_limit} per {self.period:g} s"


@dataclass
class _Timeline:
    """One venue's requests and outcomes in time, binned for its charts."""

    sent: list[float] = field(default_factory=list)  # seconds after the origin
    latencies: list[float] = field(default_factory=list)  # ms, answered requests
    pauses: list[tuple[float, float]] = field(default_factory=list)
    limited_at: list[float] = field(default_factory=list)  # 429 answers, seconds
    decided: dict[str, list[float]] = field(default_factory=dict)  # outcome -> seconds


def _seconds(value: datetime, origin: datetime) -> float:
    return (value - origin).total_seconds()


def _collect(
    store: AuditStore, run_id: str, venues: list[str]
) -> tuple[dict[str, _Timeline], datetime | None]:
    """Stream the run's requests and outcomes into per-venue timelines: seconds as floats,
    never a row object per request (a million requests are a few arrays of 8 MB). The origin
    (0 s) is the run's first request, the same for every venue, so their charts line up."""
    origin = readback.first_request_at(store, run_id)
    timelines = {v: _Timeline() for v in venues}
    if origin is None:
        return timelines, None
    limited: dict[str, list[float]] = {}
    for event in readback.request_events(store, run_id):
        line = timelines.setdefault(event.venue, _Timeline())
        line.sent.append(_seconds(event.sent_at, origin))
        if event.latency_ms is not None:
            line.latencies.append(event.latency_ms)
        if event.http_status == 429 and event.answered_at is not None:
            limited.setdefault(event.venue, []).append(_seconds(event.answered_at, origin))
    for venue, line in timelines.items():
        line.sent.sort()
        # A 429 pauses the whole venue: shade from its answer to the venue's next request.
        for start in sorted(limited.get(venue, [])):
            line.limited_at.append(start)
            index = bisect.bisect_right(line.sent, start)
            end = line.sent[index] if index < len(line.sent) else start
            if end > start:
                line.pauses.append((start, end))
    for venue, outcome, when in readback.outcome_events(store, run_id):
        line = timelines.setdefault(venue, _Timeline())
        at = _seconds(when, origin) if when is not None else 0.0
        line.decided.setdefault(outcome, []).append(max(at, 0.0))
    return timelines, origin


def _merge(spans: list[tuple[float, float]], gap: float = 0.0) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + gap:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _cumulative(times: list[float], end: float) -> tuple[list[float], list[int]]:
    """A cumulative count's steps from sorted `times`: every step while there are few, else
    the count at CURVE_POINTS even instants (a million orders make a light path too)."""
    if len(times) <= CURVE_POINTS:
        return [0.0, *times, end], [0, *range(1, len(times) + 1), len(times)]
    xs = [end * i / CURVE_POINTS for i in range(CURVE_POINTS + 1)]
    return xs, [bisect.bisect_right(times, x) for x in xs]


def _bin_width(span: float) -> float:
    """The narrowest of a few round widths that gives at most MAX_BINS bins over `span`."""
    for width in _WIDTHS:
        if span / width <= MAX_BINS:
            return width
    return float(math.ceil(span / MAX_BINS / 3600) * 3600)


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def _busy_rate(sent: list[float]) -> float:
    """Requests per second over the seconds in which the venue sent anything: a resume days
    later, or a pause, does not dilute it."""
    if not sent:
        return 0.0
    busy = len({int(s) for s in sent})
    return len(sent) / busy


def _peak_rate(sent: list[float]) -> int:
    """The most requests sent within one second (a sliding window)."""
    peak = start = 0
    for end, at in enumerate(sent):
        while at - sent[start] >= 1.0:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


def _chart(
    venue: str, line: _Timeline, limit: VenueLimit | None, span: float
) -> tuple[str, dict[str, Any]]:
    """The venue's timeline (requests per second against the limit, 429 pauses shaded,
    cumulative outcomes) and latency distribution, as one inline SVG; and what it plots."""
    import matplotlib

    matplotlib.use("svg", force=False)
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    matplotlib.rcParams["svg.fonttype"] = "none"  # text as text: smaller, and selectable
    matplotlib.rcParams["font.family"] = "sans-serif"
    matplotlib.rcParams["font.size"] = 8

    # Bins no narrower than the limit's period: a limiter may send its period's allowance in
    # a burst, and a rate is only comparable with the limit over the limit's own window.
    width = max(_bin_width(span), limit.period if limit is not None and limit.per_second else 1.0)
    bins = max(1, math.ceil((span + 1e-9) / width)) if span > 0 else 1
    counts = [0] * bins
    for at in line.sent:
        counts[min(bins - 1, int(at // width))] += 1
    per_second = [n / width for n in counts]
    edges = [i * width for i in range(bins)]

    from matplotlib.ticker import FuncFormatter, NullFormatter

    figure = Figure(figsize=(10.0, 4.2), dpi=96)
    FigureCanvasSVG(figure)
    # A fixed layout: constrained layout measured every label and doubled the render time.
    grid = figure.add_gridspec(
        2, 3, left=0.06, right=0.985, top=0.93, bottom=0.11, wspace=0.32, hspace=0.28
    )
    rate_ax = figure.add_subplot(grid[0, :2])
    outcome_ax = figure.add_subplot(grid[1, :2], sharex=rate_ax)
    latency_ax = figure.add_subplot(grid[:, 2])

    rate_ax.stairs(
        per_second, [*edges, bins * width], fill=True, color="#1565c0", linewidth=0,
        label="requests/s", gid=f"rate-{venue}",
    )
    # Pauses closer than a tenth of a bin read as one: a 429 storm is not ten thousand shapes.
    pauses = _merge(line.pauses, gap=width / 10)
    for n, (start, end) in enumerate(pauses):
        rate_ax.axvspan(
            start, end, color="#ef6c00", alpha=0.25, linewidth=0,
            label="429 pause" if n == 0 else None, gid=f"pause-{venue}-{n}",
        )
    if limit is not None and limit.per_second:
        rate_ax.axhline(
            limit.per_second, color="#c62828", linestyle="--", linewidth=1.2,
            label=f"limit {limit.describe()}", gid=f"limit-{venue}",
        )
    rate_ax.set_ylabel("requests / s")
    rate_ax.set_title(f"{venue}: requests per second ({width:g} s bins)", loc="left")
    rate_ax.legend(loc="upper right", fontsize=7, frameon=True, framealpha=0.9)
    rate_ax.set_xlim(0, max(span, width))
    rate_ax.grid(axis="y", linewidth=0.3)

    plotted_outcomes: dict[str, int] = {}
    for outcome in (o.value for o in Outcome):
        times = sorted(line.decided.get(outcome, []))
        if not times:
            continue
        plotted_outcomes[outcome] = len(times)
        xs, ys = _cumulative(times, max(span, times[-1]))
        outcome_ax.step(
            xs, ys, where="post", color=OUTCOME_COLOURS[outcome], linewidth=1.4,
            label=f"{outcome} {len(times)}", gid=f"outcome-{venue}-{outcome}",
        )
    outcome_ax.set_ylabel("orders (cumulative)")
    outcome_ax.set_xlabel("seconds since the run's first request")
    if plotted_outcomes:
        outcome_ax.legend(loc="upper left", fontsize=7, frameon=True, framealpha=0.9, ncol=2)
    outcome_ax.grid(axis="y", linewidth=0.3)

    latencies = sorted(line.latencies)
    summary: dict[str, Any] = {
        "requests": len(line.sent),
        "bins": bins,
        "bin_seconds": width,
        "pauses": len(pauses),
        "outcomes": plotted_outcomes,
        "latencies": len(latencies),
    }
    if latencies:
        low, high = max(latencies[0], 0.1), max(latencies[-1], 0.2)
        if high / low > 20:  # a wide range reads better on a log scale
            ratio = (high / low) ** (1 / LATENCY_BINS)
            latency_edges = [low * ratio**i for i in range(LATENCY_BINS + 1)]
            latency_ax.set_xscale("log")
            # Plain numbers, not mathtext powers of ten (parsing those is most of a render).
            latency_ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            latency_ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            step = (high - low) / LATENCY_BINS or 1.0
            latency_edges = [low + step * i for i in range(LATENCY_BINS + 1)]
        counts_by_bin = [0] * LATENCY_BINS
        for value in latencies:
            index = bisect.bisect_right(latency_edges, max(value, low)) - 1
            counts_by_bin[min(max(index, 0), LATENCY_BINS - 1)] += 1
        latency_ax.stairs(
            counts_by_bin, latency_edges, fill=True, color="#455a64", linewidth=0,
            gid=f"latency-{venue}",
        )
        for q, style in ((0.5, "-"), (0.95, "--"), (0.99, ":")):
            value = _percentile(latencies, q)
            summary[f"p{round(q * 100)}"] = value
            latency_ax.axvline(
                max(value, low), color="#c62828", linestyle=style, linewidth=1,
                label=f"p{round(q * 100)} {value:.0f} ms",
            )
        latency_ax.legend(loc="upper right", fontsize=7, frameon=True, framealpha=0.9)
    else:
        latency_ax.text(0.5, 0.5, "no answers", ha="center", va="center",
                        transform=latency_ax.transAxes)
    latency_ax.set_title("latency", loc="left")
    latency_ax.set_xlabel("ms")
    latency_ax.set_ylabel("requests")

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # the XML prolog and DOCTYPE do not belong inside HTML
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, count=1, flags=re.DOTALL)
    return _unique_ids(svg, venue), summary


_OWN_IDS: Final = re.compile(r"(rate|limit|pause|latency|outcome)-")


def _unique_ids(svg: str, venue: str) -> str:
    """Prefix matplotlib's ids (axes_1, clip paths...) with the venue: a page that holds
    several figures must not hold one id twice. Our own ids (gid=) name the venue already."""
    prefix = re.sub(r"[^A-Za-z0-9_-]", "_", venue)
    ids = {i for i in re.findall(r' id="([^"]+)"', svg) if not _OWN_IDS.match(i)}

    def rename(match: re.Match[str]) -> str:
        name = match.group(2)
        return f"{match.group(1)}{prefix}-{name}" if name in ids else match.group(0)

    return re.sub(r'( id="|url\(#|href="#)([^")]+)', rename, svg)


def _label(svg: str, venue: str) -> str:
    return svg.replace(
        "<svg ", f'<svg role="img" aria-label="{html.escape(venue)} timeline and latency" ', 1
    )




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
    timelines, origin = _collect(store, run_id, list(stats))
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
        ("orders loaded", f"{e(header.orders_total)} ({e(header.duplicates)} duplicate rows collapsed)"),
    ]
    for name, value in rows:
        add(f"<dt>{html.escape(name)}</dt><dd>{value}</dd>")
    add("</dl>")

    if len(header.sessions) > 1 or header.sessions:
        add("<h2>Sessions</h2><table><thead><tr>")
        for name in ("#", "command", "user", "host", "pid", "started", "finished", "status",
                     "version", "command line"):
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
    add('<h2>Venues</h2><table id="venues" class="wide"><thead><tr><th class="text">venue</th>'
        "<th>orders</th>")
    for outcome in outcomes:
        add(f"<th>{outcome.replace('_', '_<wbr>')}</th>")
    add("<th>no outcome</th><th>requests</th><th>429s</th><th>first send</th>"
        "<th>last answer</th><th>achieved rate</th><th>peak 1 s</th><th>limit</th></tr>"
        "</thead><tbody>")
    totals: Counter[str] = Counter()
    facts: dict[str, Any] = {"venues": {}}
    for venue, stat in stats.items():
        line = timelines.get(venue, _Timeline())
        limit = limits.get(venue)
        rate = _busy_rate(line.sent)
        peak = _peak_rate(line.sent)
        share = (
            f" ({rate / limit.per_second:.0%})" if limit is not None and limit.per_second else ""
        )
        over = (
            ' class="bad"'
            if limit is not None and limit.per_second and peak > limit.rate_limit
            and limit.period <= 1.0
            else ""
        )
        add(f'<tr data-venue="{e(venue)}"><td class="text">{e(venue)}</td>'
            f'<td data-field="orders">{stat.orders}</td>')
        for outcome in outcomes:
            n = stat.outcomes.get(outcome, 0)
            flag = ' class="bad"' if n and outcome not in _GOOD else ""
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
    add('<tr class="total" data-venue=""><td class="text">all venues</td>'
        f'<td data-field="orders">{totals["orders"]}</td>')
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
        line = timelines.get(venue, _Timeline())
        svg, plotted = _chart(venue, line, limits.get(venue), span)
        svg = _label(svg, venue)
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
            f'{plotted["bins"]} bins of {plotted["bin_seconds"]:g} s; '
            f'{plotted["pauses"]} 429 pause(s) shaded{latency}.</figcaption></figure></section>'
        )

    add(f'<h2>Orders that need a human (<span id="attention-total">{attention_total}</span>)'
        "</h2>")
    if not attention_total:
        add('<p id="attention-none">None: every order was canceled, is gone, or was invalid '
            "input (invalid rows are listed in the CSV report).</p>")
    else:
        add('<table id="attention"><thead><tr>')
        for name in ("venue", "order_id", "account_id", "symbol", "outcome", "reason",
                     "attempts", "last HTTP", "last answer"):
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
            add(f'<p class="note">…and {attention_total - len(attention)} more; every order is '
                f"in <code>batchcancel report {e(header.id)} --format csv</code>.</p>")
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
