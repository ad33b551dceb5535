"""Prometheus metrics through the real CLI: the textfile (parsed with prometheus_client's own
parser) and a real Pushgateway (Debian's prometheus-pushgateway, started here on 127.0.0.1).
SPEC's names and labels; the last success survives a run that does not succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

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
from tests.torture_support import build_venues

PUSHGATEWAY = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"
OUTCOMES = {
    "canceled", "cancel_pending", "already_closed", "not_found", "rejected", "invalid",
    "failed", "skipped",
}
KINDS = {"cancel", "bulk", "sweep", "confirm", "list"}
NAMES = {
    "batchcancel_orders",
    "batchcancel_requests",  # the parser names a counter family without its _total
    "batchcancel_rate_limited",
    "batchcancel_run_duration_seconds",
    "batchcancel_last_success_timestamp_seconds",
}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a metrics text: (name, labels) -> value."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def value(found: Samples, name: str, **labels: str) -> float:
    return found[name, frozenset(labels.items())]


def venues_config(tmp_path: Path, server: Any, **limits: int) -> Path:
    return write_venues_toml(
        tmp_path / "venues.toml",
        server,
        **{
            venue: {"rate_limit": limit, "period": 1.0, "backoff": 0.05, "cooldown": 0.3}
            for venue, limit in limits.items()
        },
    )


async def test_textfile_has_specs_names_labels_and_the_runs_counts(
    tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
) -> None:
    """A run with a 429 and unknown orders: the textfile's gauges are the run's outcomes
    (each outcome present, 0 where none), its request counters what the venues received,
    its 429 counter the 429 answered; exit 1, so no last success is written."""
    plan = FaultPlan(retry_after=0.2)
    venues = build_venues(
        {"sfox": 12, "tanx": 8}, states=(OrderState.OPEN, None), faults={"sfox": plan}
    )
    plan.script(venues.ids("sfox")[2], Fault.RATE_LIMIT)
    orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
    prom = tmp_path / "batchcancel.prom"
    async with serve_simulators(venues.simulators) as server:
        config = venues_config(tmp_path, server, sfox=0, tanx=0)
        result = await run_cli(
            "run", str(orders), "--venues-config", str(config), "--json",
            "--metrics-file", str(prom), env=cli_env(audit_url),
        )
    assert result.code == 1, result.stderr
    summary = json.loads(result.stdout)
    text = prom.read_text(encoding="utf-8")
    assert not any(secret in text for secret in SECRET_VALUES)
    assert summary["run_id"] not in text, "never the run id"
    assert families(text) == {
        "batchcancel_orders": "gauge",
        "batchcancel_requests": "counter",
        "batchcancel_rate_limited": "counter",
        "batchcancel_run_duration_seconds": "gauge",
    }, "no last success: the run did not succeed, and none was written before"
    found = samples(text)
    for venue in ("sfox", "tanx"):
        for outcome in OUTCOMES:
            assert value(found, "batchcancel_orders", command="run", venue=venue,
                         outcome=outcome) == summary["venues"][venue][outcome], (venue, outcome)
        received = venues.simulators[venue].total_requests
        assert value(found, "batchcancel_requests_total", command="run", venue=venue,
                     kind="cancel") == received
        for kind in KINDS - {"cancel"}:
            assert value(found, "batchcancel_requests_total", command="run", venue=venue,
                         kind=kind) == 0
    assert value(found, "batchcancel_rate_limited_total", command="run", venue="sfox") == 1
    assert value(found, "batchcancel_rate_limited_total", command="run", venue="tanx") == 0
    duration = value(found, "batchcancel_run_duration_seconds", command="run")
    assert duration == pytest.approx(summary["elapsed_s"], abs=0.01)
    labels = {name: {frozenset(dict(ls)) for n, ls in found if n.startswith(name)}
              for name in NAMES}
    assert labels["batchcancel_orders"] == {frozenset({"command", "venue", "outcome"})}
    assert labels["batchcancel_requests"] == {frozenset({"command", "venue", "kind"})}
    assert labels["batchcancel_rate_limited"] == {frozenset({"command", "venue"})}
    assert labels["batchcancel_run_duration_seconds"] == {frozenset({"command"})}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("batchcancel.prom.")]
    assert leftovers == [], "the atomic write left its temporary file"


async def test_textfile_last_success_survives_runs_that_do_not_succeed(
    tmp_path: Path, serve_simulators: ServeSimulators
) -> None:
    """A run that succeeds writes its time; a later run with an unknown order (exit 1) and a
    usage error (exit 2) leave it exactly as it was, while the counts are the new run's."""
    db = tmp_path / "audit.db"
    prom = tmp_path / "eod.prom"
    good = build_venues({"sfox": 5})
    bad = build_venues({"sfox": 3}, states=(None,))
    good_csv = write_orders_csv(tmp_path / "good.csv", good.rows)
    async with serve_simulators({**good.simulators}) as server:
        config = venues_config(tmp_path, server, sfox=0)
        first = await run_cli("run", str(good_csv), "--venues-config", str(config),
                              "--metrics-file", str(prom), env=cli_env(db))
    assert first.code == 0, first.stderr
    after_first = samples(prom.read_text())
    success = value(after_first, "batchcancel_last_success_timestamp_seconds", command="run")
    assert success > 1.7e9
    assert value(after_first, "batchcancel_orders", command="run", venue="sfox",
                 outcome="canceled") == 5

    bad_csv = write_orders_csv(tmp_path / "bad.csv", bad.rows)
    async with serve_simulators(bad.simulators) as server:
        config = venues_config(tmp_path, server, sfox=0)
        second = await run_cli("run", str(bad_csv), "--venues-config", str(config),
                               "--metrics-file", str(prom), env=cli_env(db))
    assert second.code == 1, second.stderr
    after_second = samples(prom.read_text())
    assert value(after_second, "batchcancel_last_success_timestamp_seconds",
                 command="run") == success, "a run that did not succeed changed the last success"
    assert value(after_second, "batchcancel_orders", command="run", venue="sfox",
                 outcome="not_found") == 3
    assert value(after_second, "batchcancel_orders", command="run", venue="sfox",
                 outcome="canceled") == 0

    before = prom.read_bytes()
    usage = await run_cli("run", str(tmp_path / "missing.csv"), "--metrics-file", str(prom),
                          env=cli_env(db))
    assert usage.code == 2
    assert prom.read_bytes() == before, "a usage error wrote metrics"


async def test_textfile_is_written_while_the_run_works(
    tmp_path: Path, serve_simulators: ServeSimulators
) -> None:
    """At 10 requests a second, 40 orders take about four seconds: with a write every 0.3 s
    the file shows the run part-way (fewer orders decided than there are), then complete."""
    db = tmp_path / "audit.db"
    prom = tmp_path / "live.prom"
    venues = build_venues({"sfox": 40})
    orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
    env = {**cli_env(db), "BATCHCANCEL_METRICS_INTERVAL": "0.3"}
    seen: list[float] = []
    async with serve_simulators(venues.simulators) as server:
        config = venues_config(tmp_path, server, sfox=10)
        task = asyncio.create_task(run_cli(
            "run", str(orders), "--venues-config", str(config), "--metrics-file", str(prom),
            env=env,
        ))
        for _ in range(2400):  # bounded: at most about two minutes
            if task.done():
                break
            if prom.exists():
                found = samples(prom.read_text())  # always whole: written atomically
                seen.append(sum(v for (name, _), v in found.items()
                                if name == "batchcancel_orders"))
            await asyncio.sleep(0.05)
        result = await task
    assert result.code == 0, result.stderr
    assert any(0 < n < 40 for n in seen), f"no write while the run worked: {sorted(set(seen))}"
    assert seen == sorted(seen), "the counts went backwards"
    final = samples(prom.read_text())
    assert value(final, "batchcancel_orders", command="run", venue="sfox",
                 outcome="canceled") == 40
    assert ("batchcancel_last_success_timestamp_seconds",
            frozenset({("command", "run")})) in final


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def pushgateway_process(tmp_path: Path) -> Iterator[str]:
    """A real Pushgateway on 127.0.0.1 with its storage under tmp_path; stopped after."""
    if not Path(PUSHGATEWAY).exists():
        if os.environ.get(REQUIRE_PG_VAR):  # under .ci/run, which installs it
            pytest.fail(f"{PUSHGATEWAY} is not installed")
        pytest.skip("prometheus-pushgateway is not installed")
    port = free_port()
    log = (tmp_path / "pushgateway.log").open("wb")
    process = subprocess.Popen(
        [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}",
         f"--persistence.file={tmp_path / 'pushgateway.store'}"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextlib.asynccontextmanager
async def pushgateway(tmp_path: Path) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    with pushgateway_process(tmp_path) as url:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):  # bounded wait for it to listen
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/-/ready") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the Pushgateway did not start (see pushgateway.log)")
            yield url, session


async def gateway_state(url: str, session: aiohttp.ClientSession) -> tuple[Samples, list[dict[str, str]]]:
    """What the Pushgateway exposes (/metrics), and its groups' labels (/api/v1/metrics)."""
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    async with session.get(f"{url}/api/v1/metrics") as response:
        groups = [g["labels"] for g in (await response.json())["data"]]
    ours = {k: v for k, v in samples(text).items() if k[0].startswith("batchcancel_")}
    return ours, groups


async def test_pushgateway_groups_by_command_and_venue_and_keeps_last_success(
    tmp_path: Path, serve_simulators: ServeSimulators
) -> None:
    """Against a real Pushgateway: each venue's series in the group {command, venue}, the
    run-wide ones in {command, venue=""}; three runs leave the same groups (never the run
    id); a run that does not succeed replaces the counts and the duration and leaves the
    last success; --pushgateway and BATCHCANCEL_PUSHGATEWAY both work."""
    db = tmp_path / "audit.db"
    good = build_venues({"sfox": 6, "tanx": 4})
    async with pushgateway(tmp_path) as (url, session), serve_simulators(
        good.simulators
    ) as server:
        config = venues_config(tmp_path, server, sfox=0, tanx=0)
        good_csv = write_orders_csv(tmp_path / "good.csv", good.rows)
        first = await run_cli("run", str(good_csv), "--venues-config", str(config), "--json",
                              "--pushgateway", url, env=cli_env(db))
        assert first.code == 0, first.stderr
        found, groups = await gateway_state(url, session)
        run_id = json.loads(first.stdout)["run_id"]
        assert all(run_id not in str(labels) for labels in groups)
        assert sorted((g["command"], g.get("venue", "")) for g in groups) == [
            ("run", ""), ("run", "sfox"), ("run", "tanx"),
        ]
        assert all(g["job"] == "batchcancel" for g in groups)
        key = {"job": "batchcancel", "command": "run", "instance": ""}
        assert value(found, "batchcancel_orders", **key, venue="sfox", outcome="canceled") == 6
        assert value(found, "batchcancel_requests_total", **key, venue="tanx", kind="cancel") == 4
        assert value(found, "batchcancel_rate_limited_total", **key, venue="sfox") == 0
        run_wide = {**key, "venue": ""}  # the run-wide group's venue is empty
        success = value(found, "batchcancel_last_success_timestamp_seconds", **run_wide)
        duration = value(found, "batchcancel_run_duration_seconds", **run_wide)
        assert success > 1.7e9 and duration > 0

        # Orders sFOX does not know: exit 1, pushed through the environment variable.
        for simulator in good.simulators.values():
            simulator.book.clear()
        second = await run_cli("run", str(good_csv), "--venues-config", str(config),
                               "--json", env={**cli_env(db), "BATCHCANCEL_PUSHGATEWAY": url})
        assert second.code == 1, second.stderr
        found, groups = await gateway_state(url, session)
        assert len(groups) == 3, "the second run added groups"
        assert value(found, "batchcancel_last_success_timestamp_seconds", **run_wide) == success
        assert value(found, "batchcancel_orders", **key, venue="sfox", outcome="canceled") == 0
        assert value(found, "batchcancel_orders", **key, venue="sfox", outcome="not_found") == 6
        new_duration = value(found, "batchcancel_run_duration_seconds", **run_wide)
        assert new_duration == pytest.approx(json.loads(second.stdout)["elapsed_s"], abs=0.01)

        # A kill is its own command: its own groups, the run's untouched.
        killed = await run_cli("kill", str(good_csv), "--venues-config", str(config),
                               "--pushgateway", url, env=cli_env(db))
        assert killed.code == 1, killed.stderr
        found, groups = await gateway_state(url, session)
        assert sorted((g["command"], g.get("venue", "")) for g in groups) == [
            ("kill", ""), ("kill", "sfox"), ("kill", "tanx"),
            ("run", ""), ("run", "sfox"), ("run", "tanx"),
        ]
        assert value(found, "batchcancel_last_success_timestamp_seconds", **run_wide) == success
        kill_key = {**key, "command": "kill"}
        assert not any(
            name == "batchcancel_last_success_timestamp_seconds" and ("command", "kill") in labels
            for name, labels in found
        ), "the kill did not succeed: it has no last success"
        assert value(found, "batchcancel_run_duration_seconds", **kill_key, venue="") > 0
        assert value(found, "batchcancel_requests_total", **kill_key, venue="sfox",
                     kind="bulk") == 1, "a kill's bulk request counts once"
        assert not any(secret in str(found) for secret in SECRET_VALUES)


async def test_an_unreachable_pushgateway_is_a_warning_not_a_failure(
    tmp_path: Path, serve_simulators: ServeSimulators
) -> None:
    """Nothing listens at the Pushgateway's address: the run still cancels everything and
    exits 0, with one warning on stderr; the textfile is written all the same."""
    db = tmp_path / "audit.db"
    venues = build_venues({"sfox": 3})
    orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
    prom = tmp_path / "m.prom"
    async with serve_simulators(venues.simulators) as server:
        config = venues_config(tmp_path, server, sfox=0)
        result = await run_cli(
            "run", str(orders), "--venues-config", str(config), "--metrics-file", str(prom),
            "--pushgateway", f"http://127.0.0.1:{free_port()}", env=cli_env(db),
        )
    assert result.code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "Pushgateway" in line]
    assert len(warnings) == 1 and "Traceback" not in result.stderr, result.stderr
    assert value(samples(prom.read_text()), "batchcancel_orders", command="run", venue="sfox",
                 outcome="canceled") == 3


@contextlib.asynccontextmanager
async def receiver(
    status: int = 200, delay: float = 0.0
) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on 127.0.0.1: the JSON bodies POSTed to it, in order."""
    from aiohttp import web

    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        received.append(await request.json())
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook/{token}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook/T0KEN-in-the-path", received
    finally:
        await runner.cleanup()


async def test_notify_posts_the_summary_and_a_kill_also_its_start(
    tmp_path: Path, serve_simulators: ServeSimulators
) -> None:
    """--notify: a run's --json summary is POSTed once at its end; a kill (URL from
    BATCHCANCEL_NOTIFY) POSTs what it is about to cancel (status running) first, then its
    summary. No credential is in either."""
    db = tmp_path / "audit.db"
    venues = build_venues({"sfox": 4, "tanx": 3})
    orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
    async with receiver() as (url, received), serve_simulators(venues.simulators) as server:
        config = venues_config(tmp_path, server, sfox=0, tanx=0)
        ran = await run_cli("run", str(orders), "--venues-config", str(config), "--json",
                            "--notify", url, env=cli_env(db))
        assert ran.code == 0, ran.stderr
        assert received == [json.loads(ran.stdout)]
        received.clear()
        for simulator in venues.simulators.values():
            simulator.book.clear()
        killed = await run_cli("kill", str(orders), "--venues-config", str(config), "--json",
                               env={**cli_env(db), "BATCHCANCEL_NOTIFY": url})
    assert killed.code == 1, killed.stderr
    summary = json.loads(killed.stdout)
    assert len(received) == 2, received
    start, end = received
    assert start["status"] == "running" and start["run_id"] == summary["run_id"]
    assert start["orders"] == 7 and set(start["venues"]) == {"sfox", "tanx"}
    assert end == summary
    assert not any(secret in json.dumps(received) for secret in SECRET_VALUES)
    assert "notify" not in ran.stderr + killed.stderr, "no warning when delivered"


async def test_notify_failures_are_warnings_bounded_in_time(
    tmp_path: Path, serve_simulators: ServeSimulators
) -> None:
    """A receiver that answers 500, and one that never answers within the bound: the run
    exits as it would have, with one warning each that names the host, never the URL's
    path (a webhook's token)."""
    db = tmp_path / "audit.db"
    venues = build_venues({"sfox": 2})
    orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
    async with serve_simulators(venues.simulators) as server:
        config = venues_config(tmp_path, server, sfox=0)
        async with receiver(status=500) as (url, received):
            failed = await run_cli("run", str(orders), "--venues-config", str(config),
                                   "--notify", url, env=cli_env(db))
        assert failed.code == 0, failed.stderr
        assert len(received) == 1
        warnings = [line for line in failed.stderr.splitlines() if "notify" in line]
        assert len(warnings) == 1 and "HTTP 500" in warnings[0], failed.stderr
        async with receiver(delay=8) as (url, received):  # past the 5 s bound
            slow = await run_cli("run", str(orders), "--venues-config", str(config),
                                 "--notify", url, env=cli_env(db), timeout=60)
        assert slow.code == 0, slow.stderr
        warnings = [line for line in slow.stderr.splitlines() if "notify" in line]
        assert len(warnings) == 1 and "timed out" in warnings[0].lower(), slow.stderr
    for text in (failed.stderr, slow.stderr):
        assert "T0KEN" not in text and "127.0.0.1" in text


async def test_confirm_and_resume_write_their_own_command(
    tmp_path: Path, serve_simulators: ServeSimulators
) -> None:
    """`confirm RUN --metrics-file`: series labelled command="confirm", its status polls
    counted as kind confirm (what the venue received), the orders as the confirm left them,
    a last success of its own; `resume RUN` then writes command="resume"."""
    db = tmp_path / "audit.db"
    venues = build_venues({"sfox": 4}, states=(OrderState.OPEN_ASYNC,), settle_after=0.1)
    orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
    confirm_prom, resume_prom = tmp_path / "confirm.prom", tmp_path / "resume.prom"
    async with serve_simulators(venues.simulators) as server:
        config = venues_config(tmp_path, server, sfox=0)
        ran = await run_cli("run", str(orders), "--venues-config", str(config), "--json",
                            env=cli_env(db))
        assert ran.code == 0, ran.stderr
        run_id = json.loads(ran.stdout)["run_id"]
        assert json.loads(ran.stdout)["outcomes"]["cancel_pending"] == 4
        confirmed = await run_cli("confirm", run_id, "--venues-config", str(config),
                                  "--metrics-file", str(confirm_prom), env=cli_env(db))
        assert confirmed.code == 0, confirmed.stderr
        resumed = await run_cli("resume", run_id, "--venues-config", str(config),
                                "--metrics-file", str(resume_prom), env=cli_env(db))
        assert resumed.code == 0, resumed.stderr
    found = samples(confirm_prom.read_text())
    assert {dict(labels)["command"] for _, labels in found} == {"confirm"}
    polls = sum(venues.simulators["sfox"].status_requests.values())
    assert polls >= 4
    assert value(found, "batchcancel_requests_total", command="confirm", venue="sfox",
                 kind="confirm") == polls
    assert value(found, "batchcancel_requests_total", command="confirm", venue="sfox",
                 kind="cancel") == 4, "the run's cancels are the run's: counted too"
    assert value(found, "batchcancel_orders", command="confirm", venue="sfox",
                 outcome="canceled") == 4
    assert value(found, "batchcancel_orders", command="confirm", venue="sfox",
                 outcome="cancel_pending") == 0
    assert ("batchcancel_last_success_timestamp_seconds",
            frozenset({("command", "confirm")})) in found
    resumed_found = samples(resume_prom.read_text())
    assert {dict(labels)["command"] for _, labels in resumed_found} == {"resume"}
    assert value(resumed_found, "batchcancel_orders", command="resume", venue="sfox",
                 outcome="canceled") == 4
