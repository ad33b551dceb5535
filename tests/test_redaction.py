"""Nothing secret leaves the process, and no text can fail an audit write (SPEC, Audit and resume).

Through the real CLI and the real simulators: a venue that echoes its credential back (whole,
cut by the excerpt's length limit, or lower-cased by the adapter) leaks it nowhere; answers
and inputs holding NUL bytes, control characters and lone surrogates are stored escaped on
SQLite and PostgreSQL and stop nothing; database passwords in every URL form stay out of the
command lines the audit records and out of everything printed; CSV reports never hand a
spreadsheet a formula. The simulators here are the real ones with one route changed.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiohttp import web

from batchcancel.audit.store import (
    Answer,
    AuditStore,
    Begin,
    PlannedOrder,
    SweptOrder,
    utcnow,
)
from batchcancel.outcomes import Outcome
from batchcancel.redact import Redactor
from batchcancel.simulators.base import OrderState, Simulator
from batchcancel.simulators.etna import EtnaSimulator
from batchcancel.simulators.sfox import SfoxSimulator
from batchcancel.simulators.tanx import TanxSimulator
from batchcancel.simulators.zebpay import ZebpaySimulator
from tests.conftest import (
    CREDENTIALS,
    SECRET_VALUES,
    ServeSimulators,
    cli_env,
    db_bytes,
    postgres_database,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)
from tests.pg import PostgresServer
from tests.torture_support import db_rows, order_fields, stderr_is_clean

KEYS = {"rate_limit": 0, "max_in_flight": 2, "backoff": 0.05, "timeout": 5.0}
# The first nine characters of each credential, lower-cased: what a cut or lower-cased echo
# would still show of it. Distinctive enough ("etna-secr") to appear nowhere else.
LEAK_MARKERS = tuple(secret[:9].lower() for secret in SECRET_VALUES)


def leaks(text: str) -> list[str]:
    """The credential markers found in `text`, case-insensitively."""
    lowered = text.lower()
    return [marker for marker in LEAK_MARKERS if marker in lowered]


def text_values(url: str) -> list[str]:
    """Every text value of every table of the audit database."""
    engine = sa.create_engine(url)
    values: list[str] = []
    try:
        tables = sa.MetaData()
        tables.reflect(engine)
        with engine.connect() as conn:
            for table in tables.sorted_tables:
                for row in conn.execute(sa.select(table)):
                    values.extend(v for v in row if isinstance(v, str))
    finally:
        engine.dispose()
    return values


class ScriptedSfox(SfoxSimulator):
    """sFOX whose cancel of a scripted order gives the scripted answers first, one a request."""

    def __init__(self, script: Mapping[str, Iterable[tuple[int, bytes]]], **kwargs: object):
        super().__init__(credentials=CREDENTIALS, rate_limit=None, **kwargs)  # type: ignore[arg-type]
        self.script = {key: deque(answers) for key, answers in script.items()}

    async def _cancel(self, request: web.Request) -> web.Response:
        answers = self.script.get(request.match_info["order_id"])
        if answers:
            status, body = answers.popleft()
            return web.Response(status=status, body=body, content_type="application/json")
        return await super()._cancel(request)


class EchoingSfox(SfoxSimulator):
    """Refuses every request, quoting the Authorization header it got in the 401 body."""

    def auth_problem(self, request: web.Request, body: bytes) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        return web.json_response({"error": f"Unauthorized: {header} is not known"}, status=401)


class CutEchoingEtna(EtnaSimulator):
    """Refuses with the token placed where the adapter's 120-character excerpt cuts it."""

    def auth_problem(self, request: web.Request, body: bytes) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        # '{"Message": "' is 13 characters: the token starts at 110, nine of it before the cut.
        text = "x" * 89 + " " + header + " was refused"
        return web.Response(
            status=401, text=json.dumps({"Message": text}), content_type="application/json"
        )


class LowerEchoingTanx(TanxSimulator):
    """Accepts the JWT, then refuses each cancel quoting it: tanX's adapter lower-cases
    messages, so the reason holds the credential lower-cased."""

    async def _cancel(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        return web.json_response({"message": f"Refused for caller {header}"}, status=400)


def books(simulators: Mapping[str, Simulator], count: int) -> list[dict[str, str]]:
    """Seed `count` open orders in each simulator; the order list for them all."""
    rows = []
    for venue, simulator in simulators.items():
        for n in range(count):
            fields = order_fields(venue, n)
            simulator.seed({fields["order_id"]: OrderState.OPEN})
            rows.append({"venue": venue, **fields})
    return rows


class TestEchoedCredentials:
    async def test_an_echoed_credential_appears_nowhere(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """sFOX echoes its Bearer key in a 401, ETNA echoes its token where the excerpt cuts
        it, tanX echoes its JWT in a 400 message that the adapter lower-cases. No part of a
        credential reaches stdout, stderr (text and JSON logs, progress lines), the --json and
        text summaries, `status`, the reports or any text column of the audit database; the
        venue that answers properly (ZebPay) cancels everything."""
        simulators: dict[str, Simulator] = {
            "sfox": EchoingSfox(credentials=CREDENTIALS, rate_limit=None),
            "etna": CutEchoingEtna(credentials=CREDENTIALS, rate_limit=None),
            "tanx": LowerEchoingTanx(credentials=CREDENTIALS, rate_limit=None),
            "zebpay": ZebpaySimulator(credentials=CREDENTIALS, rate_limit=None),
        }
        orders = write_orders_csv(tmp_path / "orders.csv", books(simulators, 6))
        env = cli_env(audit_url)
        outputs: list[str] = []
        async with serve_simulators(simulators) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, **dict.fromkeys(simulators, KEYS)
            )
            first = await run_cli(
                "--log-format",
                "json",
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--run-key",
                "echo",
                "--json",
                env=env,
            )
            stderr_is_clean(first.stderr)
            assert first.code == 1, first.stderr
            summary = json.loads(first.stdout)
            assert summary["venues"]["zebpay"]["canceled"] == 6
            assert summary["venues"]["tanx"]["rejected"] == 6
            assert summary["venues"]["sfox"]["skipped"] == 6
            assert summary["venues"]["etna"]["skipped"] == 6
            assert any('"event": "progress"' in line for line in first.stderr.splitlines())
            # The text forms: a resume (refused again) with text logs and the text summary.
            second = await run_cli("resume", "echo", "--venues-config", str(config), env=env)
            stderr_is_clean(second.stderr)
            assert second.code == 1, second.stderr
            assert "progress sfox:" in second.stderr and "audit:" in second.stdout
        assert simulators["sfox"].auth_refused >= 2 and simulators["etna"].auth_refused >= 2
        outputs += [first.stdout, first.stderr, second.stdout, second.stderr]
        for args in (
            ("status", "echo"),
            ("status", "echo", "--json"),
            ("status",),
            ("report", "echo", "--format", "csv"),
            ("report", "echo", "--format", "json"),
            ("report", "echo", "--format", "csv", "--attempts"),
            ("report", "echo", "--format", "json", "--attempts"),
        ):
            result = await run_cli(*args, env=env)
            assert result.code == 0, result.stderr
            outputs += [result.stdout, result.stderr]
        for output in outputs:
            assert not leaks(output), output
        reasons = [r for (r,) in db_rows(audit_url, "select reason from orders")]
        assert any("credentials refused" in str(r) for r in reasons), reasons
        for value in text_values(audit_url):
            assert not leaks(value), value
        stored = db_bytes(audit_url).lower()
        for marker in LEAK_MARKERS:
            assert marker.encode() not in stored


class TestUnsafeText:
    async def test_nul_control_characters_and_surrogates_in_answers(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """sFOX answers one order `500 {"error":"oops\\x00"}` (a raw NUL) then cancels it;
        refuses another with NUL and terminal escapes in its message; a third with a lone
        surrogate in its message; a fourth first with a terminal escape and invalid UTF-8.
        The run completes: every tanX order is sent and cancelled, and the audit holds the
        answers escaped (`\\x00`, `\\x1b`, `\\ud800`) on SQLite and PostgreSQL alike."""
        sfox = ScriptedSfox(
            {
                "1": [(500, b'{"error":"oops\x00"}')],
                "2": [(400, b'{"error":"bad\\u0000id \\u0007\\u001b[31mred"}')],
                "3": [(400, b'{"error":"bad \\ud800 id"}')],
                "4": [(503, b"\x1b[2J bad \xff\xfe gateway")],
            }
        )
        sfox.seed({str(n): OrderState.OPEN for n in range(1, 5)})
        tanx = TanxSimulator(credentials=CREDENTIALS, rate_limit=None)
        rows = [{"venue": "sfox", "order_id": str(n)} for n in range(1, 5)]
        for n in range(20):
            tanx.seed({str(700000 + n): OrderState.OPEN})
            rows.append({"venue": "tanx", "order_id": str(700000 + n)})
        orders = write_orders_csv(tmp_path / "orders.csv", rows)
        env = cli_env(audit_url)
        async with serve_simulators({"sfox": sfox, "tanx": tanx}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox=KEYS, tanx=KEYS)
            result = await run_cli(
                "run", str(orders), "--venues-config", str(config), "--json", env=env
            )
        stderr_is_clean(result.stderr)
        assert result.code == 1, result.stderr  # two orders rejected
        summary = json.loads(result.stdout)
        assert summary["venues"]["tanx"].get("canceled") == 20, summary
        assert tanx.total_requests == 20
        outcomes = dict(db_rows(audit_url, "select order_id, outcome from orders"))
        assert outcomes["1"] == "canceled" and outcomes["4"] == "canceled"
        assert outcomes["2"] == "rejected" and outcomes["3"] == "rejected"
        details = [
            str(d)
            for (d,) in db_rows(
                audit_url,
                "select a.detail from attempts a join orders o on o.pk = a.order_pk "
                "where o.order_id in ('1', '2') order by a.order_pk, a.attempt",
            )
        ]
        assert details[0] == '{"error":"oops\\x00"}', details
        reasons = dict(db_rows(audit_url, "select order_id, reason from orders"))
        assert "\\x00" in reasons["2"] and "\\x07" in reasons["2"] and "\\x1b" in reasons["2"]
        assert "\\ud800" in reasons["3"], reasons["3"]
        for value in text_values(audit_url):
            assert "\x00" not in value and "\x1b" not in value, value
        report = await run_cli(
            "report", summary["run_id"], "--format", "csv", "--attempts", env=env
        )
        assert report.code == 0, report.stderr
        assert "oops\\x00" in report.stdout and "\x00" not in report.stdout

    async def test_nul_in_query_source_values_is_recorded_invalid(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """A query source (SQLite keeps NUL in text) whose sFOX and tanX order ids hold NUL
        bytes: those rows are recorded invalid, their ids stored escaped; the valid tanX
        orders are cancelled and the run finishes (exit 1, for the invalid rows)."""
        source = tmp_path / "source.db"
        with sqlite3.connect(source) as conn:
            conn.execute("create table open_orders (venue text, order_id text)")
            conn.executemany(
                "insert into open_orders values (?, ?)",
                [("sfox", "ab\x00cd"), ("tanx", "70\x0001"), ("sfox", "x\x1by")]
                + [("tanx", str(700000 + n)) for n in range(5)],
            )
        conn.close()
        tanx = TanxSimulator(credentials=CREDENTIALS, rate_limit=None)
        tanx.seed({str(700000 + n): OrderState.OPEN for n in range(5)})
        async with serve_simulators({"tanx": tanx}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, tanx=KEYS)
            result = await run_cli(
                "run",
                "--query",
                "select venue, order_id from open_orders",
                "--source-db",
                f"sqlite:///{source}",
                "--venues-config",
                str(config),
                "--json",
                env=cli_env(audit_url),
            )
        stderr_is_clean(result.stderr)
        assert result.code == 1, result.stderr
        summary = json.loads(result.stdout)
        assert summary["outcomes"]["invalid"] == 3 and summary["outcomes"]["canceled"] == 5
        invalid = {
            str(order_id)
            for (order_id,) in db_rows(
                audit_url, "select order_id from orders where outcome = 'invalid'"
            )
        }
        assert invalid == {"ab\\x00cd", "70\\x0001", "x\\x1by"}

    def test_every_text_column_takes_any_string(self, audit_url: str) -> None:
        """Each store method that writes text (runs, sessions, orders, swept orders, answers,
        settled reasons) takes NUL bytes, C0 and C1 controls and lone surrogates (what JSON's
        \\ud800 or a surrogateescape decode produce) and stores them escaped."""
        nasty = "a\x00b\x1b[1m\x85\ud800\udcff"
        escaped = "a\\x00b\\x1b[1m\\x85\\ud800\\xff"
        store = AuditStore(audit_url, redact=SECRET_VALUES)
        try:
            run_id = store.create_run(
                command="run",
                run_key=None,
                source=nasty,
                options={"venue": nasty},
                reason=nasty,
                command_line=nasty,
                dry_run=False,
            )
            store.start_session(run_id, command="run", command_line=nasty)
            store.add_orders(
                run_id,
                [
                    PlannedOrder(1, "sfox", nasty, nasty, nasty, invalid_reason=nasty),
                    PlannedOrder(2, "sfox", "2", "", nasty),
                    PlannedOrder(3, "sfox", "3", "", ""),
                ],
            )
            at = utcnow()
            store.add_swept(
                run_id,
                "zebpay",
                [SweptOrder(nasty, nasty, "canceled", nasty, 200, at, 1.0, nasty)],
                sent_at=at,
            )
            pk = store.pending_page(run_id, "sfox", after_pk=0, limit=1)[0].pk
            store.write_batch(run_id, [Begin(pk, 1, at)], [])
            store.write_batch(
                run_id, [], [Answer(pk, 1, at, 400, "rejected", 1.0, nasty, "rejected", nasty)]
            )
            store.settle_unsent(run_id, "sfox", Outcome.SKIPPED, nasty)
        finally:
            store.close()
        values = text_values(audit_url)
        # runs: source, reason, command line; the session's command line; order 1's four
        # texts, order 2's symbol and reason; the swept order's three and its detail; order
        # 2's detail; order 3's settled reason (options are JSON: json.dumps escapes them)
        assert sum(escaped in v for v in values) == 16, values
        for value in values:
            assert "\x00" not in value and "\x1b" not in value and "\x85" not in value
            value.encode("utf-8")  # no lone surrogate left


class TestDatabasePasswords:
    async def test_url_passwords_never_stored_or_printed(
        self, tmp_path: Path, serve_simulators: ServeSimulators, postgres: PostgresServer | None
    ) -> None:
        """--db and --source-db with passwords as user:pw@, ?password=, &password= and
        libpq-style query parameters (host, port, user, password): no password in runs.command_line,
        sessions.command_line, any stored text, stdout (the `audit:` line) or stderr, in
        text and JSON logs, nor in `db upgrade`'s line. The local server trusts loopback, so
        the passwords are carried but not needed."""
        audit = postgres_database(postgres)
        source = postgres_database(postgres)
        engine = sa.create_engine(source)
        with engine.begin() as conn:
            conn.exec_driver_sql("create table open_orders (venue text, order_id text)")
            conn.exec_driver_sql(
                "insert into open_orders values ('tanx', '700000'), ('tanx', '700001')"
            )
        engine.dispose()
        base, audit_db = audit.rsplit("/", 1)
        _, source_db = source.rsplit("/", 1)
        hostport = base.split("@", 1)[1]
        host, port = hostport.split(":")
        passwords = ["Pw1-q7", "Pw2-u9", "Pw3-c2", "Pw4-l5", "Pw5-k8"]
        forms = [
            # (--db, --source-db)
            (
                f"{base}/{audit_db}?password={passwords[0]}",
                f"postgresql+psycopg://postgres:{passwords[1]}@{hostport}/{source_db}",
            ),
            (
                f"{base}/{audit_db}?connect_timeout=10&password={passwords[2]}",
                f"postgresql+psycopg:///{source_db}?host={host}&port={port}&user=postgres"
                f"&password={passwords[3]}",
            ),
        ]
        tanx = TanxSimulator(credentials=CREDENTIALS, rate_limit=None)
        tanx.seed({"700000": OrderState.OPEN, "700001": OrderState.OPEN})
        outputs: list[str] = []
        env = cli_env(audit)
        async with serve_simulators({"tanx": tanx}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, tanx=KEYS)
            for n, (db_url, source_url) in enumerate(forms):
                result = await run_cli(
                    *(("--log-format", "json") if n else ()),
                    "run",
                    "--query",
                    "select venue, order_id from open_orders",
                    "--source-db",
                    source_url,
                    "--db",
                    db_url,
                    "--venues-config",
                    str(config),
                    "--run-key",
                    f"pw-{n}",
                    env=env,
                )
                assert result.code == 0, result.stderr
                assert "audit: " in result.stdout
                outputs += [result.stdout, result.stderr]
            upgrade = await run_cli(
                "db", "upgrade", "--db", f"{base}/{audit_db}?password={passwords[4]}", env=env
            )
            assert upgrade.code == 0, upgrade.stderr
            outputs += [upgrade.stdout, upgrade.stderr]
        command_lines = [
            str(c)
            for (c,) in db_rows(
                audit, "select command_line from runs union all select command_line from sessions"
            )
        ]
        assert len(command_lines) == 4 and all("--source-db" in c for c in command_lines)
        stored = text_values(audit)
        dumped = db_bytes(audit)
        for password in passwords:
            for text in (*outputs, *command_lines, *stored):
                assert password not in text, text
            assert password.encode() not in dumped


class TestRedactor:
    """The redactor on its own: every form of secret and password it must hide."""

    @pytest.mark.parametrize(
        ("text", "hidden"),
        [
            ("postgresql://u:s3cret@host/db", "s3cret"),
            ("postgresql://u:s3/cr@t@host/db", "s3/cr"),
            ("mysql://u@h/db?password=s3cret&x=1", "s3cret"),
            ("mysql://u@h/db?x=1&PASSWORD=s3cret", "s3cret"),
            ("host=h password=s3cret dbname=d", "s3cret"),
            ("host=h password = 's3 c\\'ret' dbname=d", "c\\'ret"),
            ("Server=h;Pwd=s3cret;Database=d", "s3cret"),
            ('{"password": "s3cret"}', "s3cret"),
            ("got TOKEN-abcdef123 back", "TOKEN-abcdef123"),
            ("got token-abcdef123 back", "token-abcdef123"),
            ('{"e": "TOKEN-abcd…', "TOKEN-abcd"),
            ("got TOKEN%2Fab%2Bc back", "TOKEN%2Fab%2Bc"),
        ],
    )
    def test_text_hides(self, text: str, hidden: str) -> None:
        redactor = Redactor(["TOKEN-abcdef123", "TOKEN/ab+c"])
        assert hidden not in redactor.text(text)

    def test_url_passwords_become_secrets(self) -> None:
        """A password given in a database URL is hidden wherever it appears later."""
        redactor = Redactor(urls=["postgresql://u:p%40ss word@h/db", "sqlite:///x?password=q9z"])
        assert "p@ss word" not in redactor.text("auth failed with p@ss word")
        assert "q9z" not in redactor.text("q9z")

    def test_stored_escapes_and_keeps_readable_text(self) -> None:
        redactor = Redactor()
        assert redactor.stored("a\x00b\tc\nd\r\x7f\x9f\ud800\udc80é…") == (
            "a\\x00b\tc\nd\\x0d\\x7f\\x9f\\ud800\\x80é…"
        )
        assert redactor.stored(redactor.stored("a\x00")) == "a\\x00"  # idempotent

    def test_value_keeps_json_shape(self) -> None:
        """A structure is redacted value by value: its JSON stays valid even when a secret is
        a word that occurs in keys or numbers."""
        redactor = Redactor(["1"])
        value = redactor.value({"orders": 1, "why": "code 1", "list": ["1x"]})
        assert value == {"orders": 1, "why": "code [redacted]", "list": ["[redacted]x"]}


class TestCsvFormulas:
    async def test_csv_report_cells_never_start_a_formula(
        self, tmp_path: Path, serve_simulators: ServeSimulators
    ) -> None:
        """Order ids, and answer excerpts a venue controls, starting with =, +, -, @ are
        written to CSV reports behind a single quote (OWASP); the JSON reports keep them
        exact; numeric cells are numbers, untouched."""
        formulas = ["=1+2", "+SUM(A1)", "-2+3", "@A1", "=cmd|'/c calc'!A0"]
        # Two proxy pages (not JSON, so the excerpt starts with the venue's bytes), retried.
        sfox = ScriptedSfox({"7": [(503, b'=HYPERLINK("http://x")')], "8": [(503, b"@SUM(1)")]})
        sfox.seed({"7": OrderState.OPEN, "8": OrderState.OPEN})
        rows = [{"venue": "sfox", "order_id": f} for f in [*formulas, "7", "8"]]
        orders = write_orders_csv(tmp_path / "orders.csv", rows)
        env = cli_env(tmp_path / "audit.db")
        async with serve_simulators({"sfox": sfox}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox=KEYS)
            result = await run_cli(
                "run", str(orders), "--venues-config", str(config), "--run-key", "f", env=env
            )
        assert result.code == 1, result.stderr  # the formula ids are unknown at sFOX
        reports = {}
        for fmt in ("csv", "json"):
            for extra in ((), ("--attempts",)):
                report = await run_cli("report", "f", "--format", fmt, *extra, env=env)
                assert report.code == 0, report.stderr
                reports[fmt, bool(extra)] = report.stdout
        orders_csv = list(csv.DictReader(io.StringIO(reports["csv", False])))
        attempts_csv = list(csv.DictReader(io.StringIO(reports["csv", True])))
        assert {r["order_id"] for r in orders_csv} == {"'" + f for f in formulas} | {"7", "8"}
        for record in [*orders_csv, *attempts_csv]:
            for cell in record.values():
                assert not cell or cell[0] not in "=+-@\t\r", record
        details = {(r["order_id"], r["attempt"]): r["detail"] for r in attempts_csv}
        assert details["7", "1"] == '\'=HYPERLINK("http://x")'
        assert details["8", "1"] == "'@SUM(1)"
        exact = {(r["order_id"], r["attempt"]): r for r in json.loads(reports["json", True])}
        assert exact["7", 1]["detail"] == '=HYPERLINK("http://x")'
        assert exact["7", 1]["http_status"] == 503 and details["7", "2"] == exact["7", 2]["detail"]
        by_id = {r["order_id"]: r for r in json.loads(reports["json", False])}
        assert set(by_id) == {*formulas, "7", "8"}
        assert by_id["7"]["outcome"] == "canceled" and by_id["7"]["attempts"] == 2
        assert {r["order_id"]: r["attempts"] for r in orders_csv}["7"] == "2"
