"""`report RUN --format html`, opened in a real browser (headless Chromium over the DevTools
protocol): every venue has its chart, the totals shown are the JSON report's, nothing leaves
the page and nothing is logged to its console. A screenshot and a PDF are kept as artifacts
(under pytest's tmp path, copied to test-artifacts/).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from batchcancel.simulators.base import Fault, FaultPlan, OrderState
from tests.conftest import (
    REQUIRE_PG_VAR,
    SECRET_VALUES,
    ServeSimulators,
    cli_env,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)
from tests.torture_support import VENUE_NAMES, build_venues

CHROMIUM = os.environ.get("BATCHCANCEL_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
)
# The outcomes whose orders the report lists for a human (issue 18).
ATTENTION = {"not_found", "rejected", "failed", "skipped", "cancel_pending"}
STEP_BOUND = 60.0  # seconds any one browser step may take before the test gives up

# Reads the page as a reader sees it: the venue table's cells, each venue's figure and what
# its SVG holds, the attention table, the header.
EXTRACT = r"""
(() => {
  const num = (el) => Number(el.textContent.trim());
  const table = {};
  for (const tr of document.querySelectorAll('#venues tbody tr')) {
    const row = {};
    for (const td of tr.querySelectorAll('td[data-outcome]')) row[td.dataset.outcome] = num(td);
    for (const td of tr.querySelectorAll('td[data-field]')) row[td.dataset.field] = num(td);
    table[tr.dataset.venue] = row;
  }
  const charts = {};
  for (const fig of document.querySelectorAll('section.venue figure.chart')) {
    const v = fig.dataset.venue;
    const svg = fig.querySelector('svg');
    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    const q = (sel) => svg ? svg.querySelectorAll(sel).length : 0;
    charts[v] = {
      svg: !!svg, width: box.width, height: box.height,
      rate: q(`[id="rate-${v}"] path`), limit: q(`[id="limit-${v}"] path`),
      latency: q(`[id="latency-${v}"] path`), pauses: q(`[id^="pause-${v}-"]`),
      outcomeLines: q(`[id^="outcome-${v}-"] path`), text: svg ? svg.textContent : '',
      requests: Number(fig.dataset.requests), outcomes: JSON.parse(fig.dataset.outcomes),
    };
  }
  const attention = [...document.querySelectorAll('#attention tbody tr')].map(tr => ({
    venue: tr.cells[0].textContent, order_id: tr.cells[1].textContent,
    outcome: tr.dataset.outcome}));
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  return {
    table, charts, attention, duplicateIds: ids.filter((id, i) => ids.indexOf(id) !== i),
    attentionTotal: Number(document.getElementById('attention-total').textContent),
    runId: document.getElementById('run-id').textContent,
    status: document.getElementById('run-status').textContent,
    digestAbsent: !!document.getElementById('digest-absent'),
    digest: (document.getElementById('digest') || {}).textContent || '',
    appendix: document.getElementById('appendix').nextElementSibling.textContent,
    links: document.querySelectorAll('a[href], link, script, img, iframe').length,
    text: document.body.innerText,
  };
})()
"""


class Page:
    """One browser tab driven over the Chrome DevTools Protocol (a websocket)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._waiting:
                self._waiting.pop(data["id"]).set_result(data)
            else:
                self.events.append(data)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = future
        await self.ws.send_json({"id": self._next, "method": method, "params": params})
        answer = await asyncio.wait_for(future, STEP_BOUND)
        assert "error" not in answer, (method, answer["error"])
        return dict(answer.get("result", {}))

    async def wait_for_event(self, method: str) -> dict[str, Any]:
        for _ in range(int(STEP_BOUND / 0.05)):  # bounded
            for event in self.events:
                if event.get("method") == method:
                    return event
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {method} event from the browser")

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Page]:
    """Headless Chromium with a fresh profile, and its first tab."""
    if not Path(CHROMIUM).exists():
        if os.environ.get(REQUIRE_PG_VAR):  # under .ci/run, which installs chromium
            pytest.fail(f"{CHROMIUM} is not installed")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    profile.mkdir()
    log = (profile.parent / "chromium.log").open("wb")
    process = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    session = aiohttp.ClientSession()
    page: Page | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(int(STEP_BOUND / 0.05)):  # bounded: Chromium writes it when ready
            if port_file.exists() and port_file.read_text().count("\n") >= 1:
                break
            assert process.poll() is None, "chromium exited at start (see chromium.log)"
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        target = next(t for t in targets if t["type"] == "page")
        ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        yield page
    finally:
        if page is not None:
            await page.close()
        await session.close()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def open_report(html_file: Path, artifacts: Path, name: str) -> dict[str, Any]:
    """Open the report in Chromium; return what the page shows, the requests it made and
    what it logged; keep a full-page screenshot and a PDF print of it."""
    url = html_file.resolve().as_uri()
    async with chromium(artifacts / f"profile-{name}") as page:
        for domain in ("Network", "Runtime", "Log", "Page"):
            await page.call(f"{domain}.enable")
        await page.call("Page.navigate", url=url)
        await page.wait_for_event("Page.loadEventFired")
        shown = (
            await page.call("Runtime.evaluate", expression=EXTRACT, returnByValue=True)
        )["result"]["value"]
        size = (await page.call("Page.getLayoutMetrics"))["cssContentSize"]
        shot = await page.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        pdf = await page.call("Page.printToPDF", printBackground=False, preferCSSPageSize=True)
        events = list(page.events)
    png = artifacts / f"{name}.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    (artifacts / f"{name}.pdf").write_bytes(base64.b64decode(pdf["data"]))
    ARTIFACTS.mkdir(exist_ok=True)
    for suffix in (".png", ".pdf"):
        shutil.copy(artifacts / f"{name}{suffix}", ARTIFACTS / f"{name}{suffix}")
    shutil.copy(html_file, ARTIFACTS / f"{name}.html")
    requests = [
        e["params"]["request"]["url"]
        for e in events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    others = [
        e["method"]
        for e in events
        if e.get("method", "").startswith("Network.webSocket")
        or e.get("method") == "Network.eventSourceMessageReceived"
    ]
    console = [
        e["params"]
        for e in events
        if e.get("method") in ("Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded")
    ]
    return {
        "url": url,
        "shown": shown,
        "requests": requests,
        "other_traffic": others,
        "console": console,
        "png": png,
        "pdf": base64.b64decode(pdf["data"]),
    }


def counts_from_json_report(records: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    by_venue: dict[str, Counter[str]] = {}
    for record in records:
        by_venue.setdefault(record["venue"], Counter())[record["outcome"] or ""] += 1
    return by_venue


def assert_page_matches_json(
    opened: dict[str, Any],
    orders: list[dict[str, Any]],
    attempts: list[dict[str, Any]],
    received: dict[str, int],
) -> None:
    """Every number the page shows for the orders is the JSON report's; its requests are
    those the venue simulators received (a bulk request is one, naming many orders)."""
    shown = opened["shown"]
    expected = counts_from_json_report(orders)
    table = shown["table"]
    assert set(table) == {*expected, ""}, "one row per venue, and the total row"
    sent = Counter(received)
    for venue, counts in expected.items():
        row = table[venue]
        for outcome in ("canceled", "cancel_pending", "already_closed", "not_found",
                        "rejected", "invalid", "failed", "skipped"):
            assert row[outcome] == counts.get(outcome, 0), (venue, outcome, row)
        assert row["orders"] == sum(counts.values()), venue
        assert row["unfinished"] == counts.get("", 0), venue
        assert row["requests"] == sent[venue], venue
        assert row["rate_limited"] == len(
            {a["sent_at"] for a in attempts if a["venue"] == venue and a["http_status"] == 429}
        ), venue
    total = table[""]
    assert total["orders"] == len(orders)
    assert total["requests"] == sum(received.values())
    for outcome in ("canceled", "not_found", "skipped", "failed"):
        assert total[outcome] == sum(1 for o in orders if o["outcome"] == outcome), outcome

    # Every venue has its chart, drawn with everything it plots.
    charts = shown["charts"]
    assert set(charts) == set(expected), "one chart per venue"
    for venue, chart in charts.items():
        assert chart["svg"] and chart["width"] > 300 and chart["height"] > 100, (venue, chart)
        assert chart["rate"] == 1, f"{venue}: no requests-per-second series"
        assert chart["latency"] == 1, f"{venue}: no latency distribution"
        assert chart["limit"] == 1, f"{venue}: no limit line"
        assert chart["requests"] == sent[venue], venue
        decided = {o: n for o, n in expected[venue].items() if o}
        assert chart["outcomes"] == decided, venue
        assert chart["outcomeLines"] == len(decided), venue
        assert "requests / s" in chart["text"] and "latency" in chart["text"], venue

    # The orders that need a human: each one, and no other.
    need = sorted(
        (o["venue"], o["order_id"]) for o in orders if o["outcome"] in ATTENTION or not o["outcome"]
    )
    assert shown["attentionTotal"] == len(need)
    assert sorted((a["venue"], a["order_id"]) for a in shown["attention"]) == need
    assert "--attempts" in shown["appendix"] and shown["links"] == 0
    assert shown["duplicateIds"] == []

    # Nothing left the page but the page itself, and the console stayed silent.
    assert set(opened["requests"]) <= {opened["url"]}, opened["requests"]
    assert opened["other_traffic"] == []
    assert opened["console"] == [], opened["console"]
    assert opened["pdf"].startswith(b"%PDF")
    assert opened["png"].stat().st_size > 20_000


def limits_config(tmp_path: Path, server: Any, limits: dict[str, int]) -> Path:
    return write_venues_toml(
        tmp_path / "venues.toml",
        server,
        **{
            venue: {
                "rate_limit": limit,
                "period": 1.0,
                "cooldown": 0.5,
                "backoff": 0.05,
                "max_in_flight": 8,
                "timeout": 5.0,
            }
            for venue, limit in limits.items()
        },
    )


async def reports(run_id: str, db: str, html_out: Path, *extra: str) -> tuple[
    list[dict[str, Any]], list[dict[str, Any]], str
]:
    env = cli_env(db)
    made = await run_cli("report", run_id, "--format", "html", "-o", str(html_out), *extra, env=env)
    assert made.code == 0, made.stderr
    orders = await run_cli("report", run_id, "--format", "json", env=env)
    attempts = await run_cli("report", run_id, "--format", "json", "--attempts", env=env)
    assert orders.code == 0 and attempts.code == 0
    return json.loads(orders.stdout), json.loads(attempts.stdout), made.stderr


async def test_report_of_a_run_with_429s_in_chromium(
    tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
) -> None:
    """Five venues at their configured limits, two 429 pauses at sFOX, unknown and filled
    orders: the page shows each venue's numbers as the JSON report has them, and each chart
    with its limit line, pauses, outcomes and latencies, in a real browser."""
    plan = FaultPlan(retry_after=0.6)
    venues = build_venues(
        {"sfox": 60, "etna": 30, "crux": 20, "tanx": 30, "zebpay": 20},
        states=(OrderState.OPEN, OrderState.OPEN, OrderState.OPEN_ASYNC, None,
                OrderState.FILLED),
        faults={"sfox": plan},
    )
    plan.script(venues.ids("sfox")[10], Fault.RATE_LIMIT)
    plan.script(venues.ids("sfox")[40], Fault.RATE_LIMIT)
    orders_csv = write_orders_csv(tmp_path / "orders.csv", venues.rows)
    limits = {"sfox": 40, "etna": 30, "crux": 20, "tanx": 25, "zebpay": 20}
    async with serve_simulators(venues.simulators) as server:
        config = limits_config(tmp_path, server, limits)
        result = await run_cli(
            "run", str(orders_csv), "--venues-config", str(config), "--json",
            "--reason", "EOD <cleanup> & check", env=cli_env(audit_url),
        )
    assert result.code == 1, result.stderr  # unknown orders: attention
    run_id, digest = json.loads(result.stdout)["run_id"], json.loads(result.stdout)["digest"]
    html_file = tmp_path / "run.html"
    orders, attempts, said = await reports(run_id, audit_url, html_file)
    assert "wrote the HTML report" in said
    page = html_file.read_text(encoding="utf-8")
    assert not any(secret in page for secret in SECRET_VALUES)
    assert "EOD &lt;cleanup&gt; &amp; check" in page  # the reason, escaped
    for venue, limit in limits.items():
        assert f"limit {limit}/s" in page, venue  # the limit the run was configured with

    opened = await open_report(html_file, tmp_path, f"run-429-{audit_url.split(':')[0]}")
    print("screenshot:", opened["png"], "report bytes:", len(page))
    received = {v: s.total_requests for v, s in venues.simulators.items()}
    assert received["sfox"] == 62  # 60 orders, two of them twice (a 429, then the cancel)
    assert_page_matches_json(opened, orders, attempts, received)
    shown = opened["shown"]
    assert shown["runId"] == run_id and shown["status"] == "attention"
    assert not shown["digestAbsent"] and shown["digest"] == digest, "the run's digest"
    assert shown["charts"]["sfox"]["pauses"] >= 1, "the 429 pauses are shaded"
    assert shown["table"]["sfox"]["rate_limited"] == 2
    for venue in ("etna", "crux", "tanx", "zebpay"):
        assert shown["charts"][venue]["pauses"] == 0, venue


async def test_report_of_a_kill_with_faults_in_chromium(
    tmp_path: Path, serve_simulators: ServeSimulators
) -> None:
    """A kill where ETNA refuses the credentials (its orders skipped), tanX answers 5xx until
    attempts run out (failed), and Crux leaves orders cancel_pending: each such order is in
    the human table; the totals and charts are the JSON report's."""
    audit_url = f"sqlite:///{tmp_path / 'audit.db'}"
    tanx_plan = FaultPlan()
    venues = build_venues(
        {"sfox": 20, "etna": 10, "crux": 10, "tanx": 12, "zebpay": 10},
        states=(OrderState.OPEN, OrderState.OPEN_ASYNC),
        faults={"tanx": tanx_plan},
    )
    for order_id in venues.ids("tanx")[:3]:
        tanx_plan.script(order_id, *[Fault.SERVER_ERROR] * 5)
    venues.simulators["etna"].credentials["BATCHCANCEL_ETNA_TOKEN"] = "another-token"
    orders_csv = write_orders_csv(tmp_path / "orders.csv", venues.rows)
    async with serve_simulators(venues.simulators) as server:
        config = limits_config(tmp_path, server, dict.fromkeys(VENUE_NAMES, 50))
        result = await run_cli(
            "kill", str(orders_csv), "--venues-config", str(config), "--json",
            env=cli_env(audit_url),
        )
    assert result.code == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["venues"]["etna"]["skipped"] == 10 and summary["outcomes"]["failed"] == 3
    html_file = tmp_path / "kill.html"
    orders, attempts, _ = await reports(summary["run_id"], audit_url, html_file)
    opened = await open_report(html_file, tmp_path, "kill-faults")
    received = {v: s.total_requests for v, s in venues.simulators.items()}
    assert received["sfox"] < 20, "the kill cancelled sFOX's orders in bulk requests"
    assert_page_matches_json(opened, orders, attempts, received)
    outcomes = Counter(a["outcome"] for a in opened["shown"]["attention"])
    assert outcomes["skipped"] == 10 and outcomes["failed"] == 3
    assert outcomes["cancel_pending"] == summary["outcomes"]["cancel_pending"] > 0
    assert "kill" in opened["shown"]["text"]


async def test_html_needs_no_attempts_flag_and_other_commands_skip_matplotlib(
    tmp_path: Path, serve_simulators: ServeSimulators
) -> None:
    """matplotlib is imported by an HTML report only (its ~0.4 s is no other command's);
    --attempts with html is a usage error; the CSV report is as it was."""
    db = tmp_path / "audit.db"
    venues = build_venues({"sfox": 5})
    orders_csv = write_orders_csv(tmp_path / "orders.csv", venues.rows)
    async with serve_simulators(venues.simulators) as server:
        config = limits_config(tmp_path, server, {"sfox": 0})
        result = await run_cli("run", str(orders_csv), "--venues-config", str(config),
                               "--json", env=cli_env(db))
    assert result.code == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    env = cli_env(db)

    async def imported(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-X", "importtime", "-m", "batchcancel", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    code, out, err = await imported("report", run_id, "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("run_id,venue,order_id")
    assert " matplotlib" not in err
    code, _, err = await imported("status", run_id)
    assert code == 0 and " matplotlib" not in err
    code, out, err = await imported("report", run_id, "--format", "html")
    assert code == 0 and out.startswith("<!DOCTYPE html>") and " matplotlib" in err
    assert "unthrottled" in out
    bad = await run_cli("report", run_id, "--format", "html", "--attempts", env=env)
    assert bad.code == 2 and "--attempts" in bad.stderr and "Traceback" not in bad.stderr
