"""Prometheus metrics of a run (SPEC.md, Evidence and monitoring): a node_exporter textfile
(`--metrics-file`) and a Pushgateway (`--pushgateway`, or BATCHCANCEL_PUSHGATEWAY).

The names, as SPEC gives them:

- `batchcancel_orders{venue,outcome}` gauge: the run's orders by outcome (every outcome, 0
  where none);
- `batchcancel_requests_total{venue,kind}` counter: requests sent for the run, by kind
  (cancel, bulk, sweep, confirm, list); a bulk request counts once;
- `batchcancel_rate_limited_total{venue}` counter: 429 answers;
- `batchcancel_run_duration_seconds` gauge: how long this command worked;
- `batchcancel_last_success_timestamp_seconds` gauge: when a command last succeeded (exit 0,
  status succeeded); a command that does not succeed never changes it.

Every value is read from the audit database (batchcancel.audit.readback), so a resume's
metrics are the run's, not the session's. The textfile carries a `command` label as well
(node_exporter merges every textfile into one scrape, where a kill's series must not collide
with an end-of-day run's); on the Pushgateway, `command` and `venue` are the grouping key
(job `batchcancel`), never the run id: each venue's series live in the group
{command, venue}, the run-wide two in {command, venue=""}.

Last success: the textfile is rewritten whole, so a command that does not succeed carries the
previous file's value over (read with prometheus_client's own parser); on the Pushgateway a
success PUTs the run-wide group (replacing both values) and anything else POSTs only the
duration (pushadd: metrics of other names in the group, the last success, stay).

The webhook (`--notify URL`, or BATCHCANCEL_NOTIFY; SPEC, Notification) is a monitoring
output too, so it lives here: the `--json` summary is POSTed when the command ends (and, for a
kill, a summary of what it is about to cancel when it starts, status `running`, from a thread
of its own so that the kill does not wait for it). Each POST is bounded (NOTIFY_TIMEOUT), never
follows a redirect, and names only the URL's scheme and host in a warning (a webhook URL's
path often holds its token).

Writing never fails a run: a failure is one warning on stderr, through the caller's `warn`.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry, push_to_gateway, pushadd_to_gateway
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import write_to_textfile
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from batchcancel import config
from batchcancel.audit import readback
from batchcancel.audit.readback import MetricCounts
from batchcancel.audit.store import AuditStore
from batchcancel.errors import AuditError

__all__ = [
    "DURATION",
    "INTERVAL_VAR",
    "JOB",
    "LAST_SUCCESS",
    "NOTIFY_VAR",
    "ORDERS",
    "PUSHGATEWAY_VAR",
    "RATE_LIMITED",
    "REQUESTS",
    "Monitor",
    "post_json",
]

JOB: Final = "batchcancel"
PUSHGATEWAY_VAR: Final = "BATCHCANCEL_PUSHGATEWAY"
INTERVAL_VAR: Final = config.METRICS_INTERVAL_VAR
DEFAULT_INTERVAL: Final = 5.0
PUSH_TIMEOUT: Final = 10.0  # seconds per Pushgateway request
NOTIFY_VAR: Final = "BATCHCANCEL_NOTIFY"
NOTIFY_TIMEOUT: Final = 5.0  # seconds per webhook POST

ORDERS: Final = "batchcancel_orders"
REQUESTS: Final = "batchcancel_requests_total"
RATE_LIMITED: Final = "batchcancel_rate_limited_total"
DURATION: Final = "batchcancel_run_duration_seconds"
LAST_SUCCESS: Final = "batchcancel_last_success_timestamp_seconds"

_HELP: Final[Mapping[str, str]] = {
    ORDERS: "The run's orders by venue and outcome.",
    REQUESTS: "Requests sent to the venue for the run, by kind (a bulk request counts once).",
    RATE_LIMITED: "429 answers from the venue during the run.",
    DURATION: "Seconds the command worked.",
    LAST_SUCCESS: "Unix time the command last ended succeeded (exit 0).",
}


@dataclass(frozen=True, slots=True)
class _Snapshot:
    counts: MetricCounts | None
    duration: float
    last_success: float | None


class _Families(Collector):
    """The metric families of one snapshot, with the given fixed labels; `venues` None: all
    venues with a venue label, else only those venues' series, without one (a Pushgateway
    group's venue is its grouping key)."""

    def __init__(
        self,
        snapshot: _Snapshot,
        *,
        fixed: Mapping[str, str],
        venues: Iterable[str] | None,
        run_wide: bool,
    ) -> None:
        self.snapshot = snapshot
        self.fixed = dict(fixed)
        self.venues = list(venues) if venues is not None else None
        self.run_wide = run_wide

    def collect(self) -> Iterable[Metric]:
        fixed_names, fixed_values = list(self.fixed), list(self.fixed.values())
        counts = self.snapshot.counts
        if counts is not None and (self.venues is None or self.venues):
            venue_label = self.venues is None
            names = [*fixed_names, *(["venue"] if venue_label else [])]
            orders = GaugeMetricFamily(ORDERS, _HELP[ORDERS], labels=[*names, "outcome"])
            requests = CounterMetricFamily(REQUESTS, _HELP[REQUESTS], labels=[*names, "kind"])
            limited = CounterMetricFamily(RATE_LIMITED, _HELP[RATE_LIMITED], labels=names)
            for venue in self.venues if self.venues is not None else sorted(counts.orders):
                values = [*fixed_values, *([venue] if venue_label else [])]
                for outcome, n in counts.orders.get(venue, {}).items():
                    orders.add_metric([*values, outcome], n)
                for kind, n in counts.requests.get(venue, {}).items():
                    requests.add_metric([*values, kind], n)
                limited.add_metric(values, counts.rate_limited.get(venue, 0))
            yield orders
            yield requests
            yield limited
        if self.run_wide:
            duration = GaugeMetricFamily(DURATION, _HELP[DURATION], labels=fixed_names)
            duration.add_metric(fixed_values, round(self.snapshot.duration, 3))
            yield duration
            if self.snapshot.last_success is not None:
                last = GaugeMetricFamily(LAST_SUCCESS, _HELP[LAST_SUCCESS], labels=fixed_names)
                last.add_metric(fixed_values, self.snapshot.last_success)
                yield last


def _registry(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def previous_last_success(path: str, command: str) -> float | None:
    """The last-success value for `command` in the textfile at `path`, if it has one."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            if family.name != LAST_SUCCESS:
                continue
            for sample in family.samples:
                if sample.labels.get("command") == command:
                    return float(sample.value)
    except ValueError:
        return None  # not a metrics file we can read: nothing to carry over
    return None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer, not an instruction: the POST is not repeated


def _where(url: str) -> str:
    """A URL as a warning may name it: scheme and host only."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


def post_json(url: str, payload: Mapping[str, Any], *, timeout: float = NOTIFY_TIMEOUT) -> str:
    """POST `payload` as JSON to `url`; '' when the receiver took it (2xx), else why not."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return f"--notify needs an http(s) URL, not {_where(url)!r}"
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "batchcancel"},
    )
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
    except Exception as exc:  # never fatal: the run's outcome does not depend on a webhook
        return (
            f"{_where(url)}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
    if 200 <= status < 300:
        return ""
    return f"{_where(url)} answered HTTP {status}"


class Monitor:
    """The metrics and the webhook of one command. Call it with the lanes' views (it is a `views` callback:
    it writes the textfile every few seconds, in a thread of its own so that the engine's
    loop never waits for the database); `attach` it to the run once its id is known; call
    `finish` with whether the command succeeded. A no-op when neither output is asked for."""

    def __init__(
        self,
        command: str,
        *,
        textfile: str | None,
        pushgateway: str | None,
        warn: Callable[[str], None],
        notify: str | None = None,
        interval: float | None = None,
    ) -> None:
        self.command = command
        self.textfile = textfile
        self.pushgateway = pushgateway
        self.notify = notify
        self._notifier: threading.Thread | None = None
        self._summary: Mapping[str, Any] | None = None
        self.warn = warn
        if interval is None:
            interval = config.metrics_interval(DEFAULT_INTERVAL)
        self.interval = max(interval, 0.1)
        self.started = time.monotonic()
        self._store: AuditStore | None = None
        self._run_id: str | None = None
        self._last_write = time.monotonic()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()  # one textfile write at a time
        self._finished = False
        self._warned: set[str] = set()
        self._result: tuple[bool, float, MetricCounts | None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether any monitoring output was asked for."""
        return bool(self.textfile or self.pushgateway or self.notify)

    def starting(self, payload: Mapping[str, Any]) -> None:
        """A kill starts: POST what it is about to cancel, without waiting for the answer."""
        if not self.notify or self._notifier is not None:
            return
        url = self.notify

        def send() -> None:
            problem = post_json(url, payload)
            if problem:
                self.warn(f"notify: the start of the kill was not delivered: {problem}")

        self._notifier = threading.Thread(target=send, name="batchcancel-notify", daemon=True)
        self._notifier.start()

    def attach(self, store: AuditStore, run_id: str) -> None:
        """The run the metrics are about, and the audit they are read from."""
        self._store, self._run_id = store, run_id

    def __call__(self, views: Mapping[str, Any]) -> None:
        if not self.textfile or self._store is None or self._finished:
            return
        now = time.monotonic()
        if now - self._last_write < self.interval:
            return
        if self._writer is not None and self._writer.is_alive():
            return  # the last write is still reading the audit
        self._last_write = now
        self._writer = threading.Thread(
            target=self._write_textfile_now, name="batchcancel-metrics", daemon=True
        )
        self._writer.start()

    def _counts(self) -> MetricCounts | None:
        if self._store is None or self._run_id is None:
            return None
        try:
            return readback.metric_counts(self._store, self._run_id)
        except AuditError as exc:
            self._warn_once("read", f"metrics: {exc}")
            return None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warn(message)

    def _write_textfile_now(self) -> None:
        counts = self._counts()
        if counts is None:
            return
        with self._lock:
            if self._finished:
                return  # the final write has been made; a late periodic one must not follow
            self._write_textfile(counts, time.monotonic() - self.started, success=False)

    def _write_textfile(
        self, counts: MetricCounts | None, duration: float, *, success: bool
    ) -> None:
        assert self.textfile is not None
        last = time.time() if success else previous_last_success(self.textfile, self.command)
        snapshot = _Snapshot(counts, duration, last)
        collector = _Families(snapshot, fixed={"command": self.command}, venues=None, run_wide=True)
        try:
            write_to_textfile(self.textfile, _registry(collector))
        except OSError as exc:
            self._warn_once("textfile", f"metrics: cannot write {self.textfile}: {exc}")

    def record(
        self, *, success: bool, duration: float, summary: Mapping[str, Any] | None = None
    ) -> None:
        """The command's end, while its audit is open: whether it succeeded (exit 0, status
        succeeded), how long it worked, the run's counts as they ended, and the `--json`
        summary the webhook is sent."""
        if not self.enabled:
            return
        self._summary = summary
        if self.textfile or self.pushgateway:
            self._result = (success, duration, self._counts())

    def finish(self) -> None:
        """The final metrics: the textfile written once more, the Pushgateway pushed. Only a
        recorded success sets the last-success time; a command that failed while working on
        a run (no summary) writes the run's counts and keeps the last success as it was; one
        that never reached a run (a usage error) changes nothing."""
        if not self.enabled or self._finished:
            return
        if self.notify:
            self._notify_end()
        if not (self.textfile or self.pushgateway):
            self._finished = True
            return
        writer = self._writer
        if writer is not None:
            writer.join(timeout=60)
        if self._result is not None:
            success, took, counts = self._result
        elif self._run_id is None:
            return  # it ended before it had a run (a usage error): what was written stays
        else:  # it failed while working: the run's counts as they are, and no success
            success, took, counts = False, time.monotonic() - self.started, self._counts()
        with self._lock:
            self._finished = True
            if self.textfile:
                self._write_textfile(counts, took, success=success)
        if self.pushgateway:
            self._push(counts, took, success=success)

    def _notify_end(self) -> None:
        if self._notifier is not None:
            self._notifier.join(timeout=NOTIFY_TIMEOUT + 1)  # the start is sent first
        if self._summary is None:
            return  # it ended without a summary (an error): nothing of SPEC's shape to send
        problem = post_json(self.notify or "", self._summary)
        if problem:
            self.warn(f"notify: the summary was not delivered: {problem}")

    def _push(self, counts: MetricCounts | None, duration: float, *, success: bool) -> None:
        assert self.pushgateway is not None
        gateway = self.pushgateway
        snapshot = _Snapshot(counts, duration, time.time() if success else None)
        try:
            for venue in sorted(counts.orders) if counts is not None else []:
                # Each venue's group holds that venue's series only; PUT replaces them all.
                push_to_gateway(
                    gateway,
                    job=JOB,
                    grouping_key={"command": self.command, "venue": venue},
                    registry=_registry(
                        _Families(snapshot, fixed={}, venues=[venue], run_wide=False)
                    ),
                    timeout=PUSH_TIMEOUT,
                )
            run_wide = _registry(_Families(snapshot, fixed={}, venues=[], run_wide=True))
            key = {"command": self.command, "venue": ""}
            if success:  # both run-wide values replaced
                push_to_gateway(
                    gateway, job=JOB, grouping_key=key, registry=run_wide, timeout=PUSH_TIMEOUT
                )
            else:  # the duration only: the group's last success stays as it was
                pushadd_to_gateway(
                    gateway, job=JOB, grouping_key=key, registry=run_wide, timeout=PUSH_TIMEOUT
                )
        except Exception as exc:  # never fatal: monitoring must not fail a cancel
            text = str(exc).splitlines()[0] if str(exc) else ""
            self.warn(f"metrics: pushing to the Pushgateway failed: {type(exc).__name__}: {text}")
