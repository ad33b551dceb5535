"""The HTML report's numbers and charts: per-venue timelines (requests per second against
the limit, 429 pauses shaded, cumulative outcomes) and latency distributions, as matplotlib
figures rendered to inline SVG. matplotlib is imported only when a chart is drawn."""

from __future__ import annotations

import bisect
import html
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from batchcancel.audit import readback
from batchcancel.audit.store import AuditStore
from batchcancel.outcomes import Outcome

ATTENTION_LIMIT: Final = 1000  # rows of the attention table; the rest are counted
MAX_BINS: Final = 150  # timeline bins at most; a long run gets wider ones
_WIDTHS: Final = (
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    900.0,
    1800.0,
    3600.0,
)
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
GOOD_OUTCOMES: Final = frozenset(("canceled", "cancel_pending", "already_closed"))


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
class Timeline:
    """One venue's requests and outcomes in time, binned for its charts."""

    sent: list[float] = field(default_factory=list)  # seconds after the origin
    latencies: list[float] = field(default_factory=list)  # ms, answered requests
    pauses: list[tuple[float, float]] = field(default_factory=list)
    limited_at: list[float] = field(default_factory=list)  # 429 answers, seconds
    decided: dict[str, list[float]] = field(default_factory=dict)  # outcome -> seconds


def _seconds(value: datetime, origin: datetime) -> float:
    return (value - origin).total_seconds()


def collect_timelines(
    store: AuditStore, run_id: str, venues: list[str]
) -> tuple[dict[str, Timeline], datetime | None]:
    """Stream the run's requests and outcomes into per-venue timelines: seconds as floats,
    never a row object per request (a million requests are a few arrays of 8 MB). The origin
    (0 s) is the run's first request, the same for every venue, so their charts line up."""
    origin = readback.first_request_at(store, run_id)
    timelines = {v: Timeline() for v in venues}
    if origin is None:
        return timelines, None
    limited: dict[str, list[float]] = {}
    for event in readback.request_events(store, run_id):
        line = timelines.setdefault(event.venue, Timeline())
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
        line = timelines.setdefault(venue, Timeline())
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


def busy_rate(sent: list[float]) -> float:
    """Requests per second over the seconds in which the venue sent anything: a resume days
    later, or a pause, does not dilute it."""
    if not sent:
        return 0.0
    busy = len({int(s) for s in sent})
    return len(sent) / busy


def peak_rate(sent: list[float]) -> int:
    """The most requests sent within one second (a sliding window)."""
    peak = start = 0
    for end, at in enumerate(sent):
        while at - sent[start] >= 1.0:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


def venue_chart(
    venue: str, line: Timeline, limit: VenueLimit | None, span: float
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
        per_second,
        [*edges, bins * width],
        fill=True,
        color="#1565c0",
        linewidth=0,
        label="requests/s",
        gid=f"rate-{venue}",
    )
    # Pauses closer than a tenth of a bin read as one: a 429 storm is not ten thousand shapes.
    pauses = _merge(line.pauses, gap=width / 10)
    for n, (start, end) in enumerate(pauses):
        rate_ax.axvspan(
            start,
            end,
            color="#ef6c00",
            alpha=0.25,
            linewidth=0,
            label="429 pause" if n == 0 else None,
            gid=f"pause-{venue}-{n}",
        )
    if limit is not None and limit.per_second:
        rate_ax.axhline(
            limit.per_second,
            color="#c62828",
            linestyle="--",
            linewidth=1.2,
            label=f"limit {limit.describe()}",
            gid=f"limit-{venue}",
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
            xs,
            ys,
            where="post",
            color=OUTCOME_COLOURS[outcome],
            linewidth=1.4,
            label=f"{outcome} {len(times)}",
            gid=f"outcome-{venue}-{outcome}",
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
            counts_by_bin,
            latency_edges,
            fill=True,
            color="#455a64",
            linewidth=0,
            gid=f"latency-{venue}",
        )
        for q, style in ((0.5, "-"), (0.95, "--"), (0.99, ":")):
            value = _percentile(latencies, q)
            summary[f"p{round(q * 100)}"] = value
            latency_ax.axvline(
                max(value, low),
                color="#c62828",
                linestyle=style,
                linewidth=1,
                label=f"p{round(q * 100)} {value:.0f} ms",
            )
        latency_ax.legend(loc="upper right", fontsize=7, frameon=True, framealpha=0.9)
    else:
        latency_ax.text(
            0.5, 0.5, "no answers", ha="center", va="center", transform=latency_ax.transAxes
        )
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


def label_svg(svg: str, venue: str) -> str:
    return svg.replace(
        "<svg ", f'<svg role="img" aria-label="{html.escape(venue)} timeline and latency" ', 1
    )
