"""The tamper-evident audit: every fact hash-chained, `verify` recomputes it, exports check alone.

A finished run (retries, a refusal, an invalid row, a confirm pass) is tampered with in each
way a person with write access could: a value edited, a row deleted, a row inserted, links
reordered, a link's facts rewritten, everything rewritten with fresh hashes. Each is named;
the untouched run is intact on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import rfc8785
import sqlalchemy as sa

from batchcancel.audit.chain import canonical, link_hash
from batchcancel.audit.store import AuditStore
from batchcancel.audit.verify import export_run, read_links, verify_against, verify_file, verify_run
from batchcancel.simulators.base import Fault, FaultPlan, OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    db_rows,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)


def random_fact(rng: random.Random, depth: int = 0) -> Any:
    """A value of the kinds facts hold: strings (any text), integers, booleans, null."""
    choice = rng.randrange(7 if depth < 3 else 4)
    if choice == 0:
        return rng.randrange(-(2**53) + 1, 2**53)  # JCS: integers a double holds exactly
    if choice == 1:
        return "".join(chr(rng.choice([rng.randrange(0, 0x80), rng.randrange(0x80, 0xD800),
                                       rng.randrange(0xE000, 0x110000)]))
                       for _ in range(rng.randrange(12)))  # fmt: skip
    if choice == 2:
        return rng.choice([True, False, None])
    if choice == 3:
        return rng.choice(["", "é", "\u2028", "\x7f", "\x1f", '"\\'])
    if choice in (4, 5):
        keys = ["t", "pk", "attempt", "detail", "a_b", "Z", "z", "10", "9"]
        return {rng.choice(keys): random_fact(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [random_fact(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_the_fast_serialisation_is_rfc8785() -> None:
    """What the hot path writes is byte for byte what the rfc8785 library (verify) computes."""
    rng = random.Random(8785)
    for _ in range(3000):
        fact = random_fact(rng)
        assert canonical(fact) == rfc8785.dumps(fact), fact


async def finished_run(tmp_path: Path, serve: ServeSimulators, url: str) -> str:
    """A run through the real CLI with a retry, a refusal, an invalid row and a confirm."""
    faults = FaultPlan().script("11", Fault.SERVER_ERROR).script("12", Fault.DROP_AFTER)
    sim = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None, faults=faults, settle_after=0.1)
    sim.seed({str(n): OrderState.OPEN for n in range(10, 30)})
    sim.seed({"13": OrderState.FILLED})
    rows = [{"venue": "sfox", "order_id": str(n)} for n in range(10, 30)]
    rows.append({"venue": "sfox", "order_id": ""})  # invalid: never sent
    async with serve({"sfox": sim}) as server:
        config = write_venues_toml(tmp_path / "v.toml", server, sfox={"rate_limit": 0})
        orders = write_orders_csv(tmp_path / "orders.csv", rows)
        result = await run_cli(
            "run", str(orders), "--venues-config", str(config), "--confirm", "--json",
            env=cli_env(url),
        )  # fmt: skip
    summary = json.loads(result.stdout)
    return str(summary["run_id"])


def tamper(url: str, sql: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text(sql)).rowcount >= 1, sql
    finally:
        engine.dispose()


class TestVerify:
    async def test_intact_run_and_every_kind_of_tampering(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        run_id = await finished_run(tmp_path, serve_simulators, audit_url)
        store = AuditStore(audit_url)
        try:
            verdict = verify_run(store.engine, run_id)
            assert verdict.intact, verdict.problem
            assert verdict.facts > 40
            assert verdict.digest == store.digest(run_id)
            assert db_rows(audit_url, "select digest from runs") == [(verdict.digest,)]
            export = tmp_path / "run.jsonl"
            assert export_run(store.engine, run_id, export).intact
            assert verify_file(export).intact

            cases = [
                ("update attempts set detail = 'nothing' where attempt = 2",
                 "attempts", "detail"),
                ("update orders set outcome = 'canceled' where order_id = '13'",
                 "orders", "outcome"),
                ("delete from attempts where attempt = 2", "attempts", "missing"),
                (f"insert into attempts (order_pk, attempt, run_id, worker, kind, sent_at, detail)"
                 f" select pk, 9, '{run_id}', 'w', 'cancel', first_sent_at, '' from orders"
                 f" where order_id = '20'", "attempts", "inserted"),
                ("update chain_links set facts = replace(facts, '\"canceled\"', '\"failed\"')"
                 " where facts like '%\"canceled\"%'", "link", "edited"),
                ("update chain_links set seq = seq + 100 where seq = 2", "link", "expected link"),
            ]  # fmt: skip
            swap = "(select pk from orders where order_id = '11')"
            cases += [
                ("update attempts set answered_at = sent_at where attempt = 1 and order_pk = "
                 "(select min(pk) from orders where outcome = 'canceled')",
                 "attempts", "answered_at"),
                ("update runs set reason = 'routine'", "runs", "reason"),
                # two attempts of one order swapped (in three steps: the key is unique)
                (f"update attempts set attempt = 7 where attempt = 1 and order_pk = {swap};"
                 f"update attempts set attempt = 1 where attempt = 2 and order_pk = {swap};"
                 f"update attempts set attempt = 2 where attempt = 7 and order_pk = {swap}",
                 "attempts", "is "),
                ("delete from attempts where order_pk = (select pk from orders where "
                 "order_id = '15');delete from orders where order_id = '15'", "", "missing"),
            ]  # fmt: skip
            for sql, table, word in cases:
                before = _snapshot(audit_url)
                for statement in sql.split(";"):
                    tamper(audit_url, statement)
                found = verify_run(store.engine, run_id)
                assert not found.intact, sql
                assert table in found.problem and word in found.problem, (sql, found.problem)
                _restore(audit_url, before)
                assert verify_run(store.engine, run_id).intact, sql

            # A rewrite that recomputes every hash passes on its own; the export catches it.
            _rewrite_everything(audit_url, run_id, "filled_late")
            assert verify_run(store.engine, run_id).digest != verdict.digest
            against = verify_against(store.engine, run_id, export)
            assert not against.intact and "differs from the export" in against.problem
        finally:
            store.close()

    async def test_a_tampered_export_is_named(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        run_id = await finished_run(tmp_path, serve_simulators, audit_url)
        store = AuditStore(audit_url)
        try:
            export = tmp_path / "run.jsonl"
            export_run(store.engine, run_id, export)
        finally:
            store.close()
        lines = export.read_text().splitlines()
        edited = next(n for n, line in enumerate(lines) if n and "sfox" in line)
        lines[edited] = lines[edited].replace("sfox", "SFOX", 1)
        export.write_text("\n".join(lines) + "\n")
        found = verify_file(export)
        assert not found.intact and "link" in found.problem


def _snapshot(url: str) -> dict[str, list[dict[str, Any]]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table: [dict(r) for r in conn.execute(sa.text(f"select * from {table}")).mappings()]
                for table in ("runs", "attempts", "orders", "chain_links")
            }
    finally:
        engine.dispose()


def _restore(url: str, snapshot: dict[str, list[dict[str, Any]]]) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for table in ("attempts", "chain_links", "orders", "runs"):
                if table != "runs":
                    conn.execute(sa.text(f"delete from {table}"))
            for table in ("runs", "orders", "attempts", "chain_links"):
                rows = snapshot[table]
                if table == "runs":
                    for row in rows:
                        sets = ", ".join(f"{k} = :{k}" for k in row if k != "id")
                        conn.execute(sa.text(f"update runs set {sets} where id = :id"), row)
                    continue
                if rows:
                    cols = ", ".join(rows[0])
                    marks = ", ".join(f":{k}" for k in rows[0])
                    conn.execute(sa.text(f"insert into {table} ({cols}) values ({marks})"), rows)
    finally:
        engine.dispose()


def _rewrite_everything(url: str, run_id: str, outcome: str) -> None:
    """What a database superuser could do: change a fact and recompute every hash after it."""
    engine = sa.create_engine(url)
    try:
        links = read_links(engine, run_id)
        heads: dict[str, str] = {}
        with engine.begin() as conn:
            for link in links:
                facts = json.loads(link["facts"])
                for fact in facts:
                    if fact.get("t") == "answer" and fact.get("outcome") == "canceled":
                        fact["outcome"] = outcome
                body = rfc8785.dumps(facts)
                prev = heads.get(link["chain_id"], "0" * 64)
                new_hash = link_hash(run_id, link["chain_id"], link["seq"], prev, body)
                heads[link["chain_id"]] = new_hash
                conn.execute(
                    sa.text(
                        "update chain_links set facts = :f, prev = :p, hash = :h where pk = :pk"
                    ),
                    {"f": body.decode(), "p": prev, "h": new_hash, "pk": link["pk"]},
                )
            conn.execute(sa.text("update orders set outcome = :o where outcome = 'canceled'"),
                         {"o": outcome})  # fmt: skip
    finally:
        engine.dispose()


@pytest.mark.parametrize("bad", ["not a key", "00" * 31])
def test_signing_key_errors_never_quote_the_key(bad: str) -> None:
    from batchcancel.audit.signing import load_private_key
    from batchcancel.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_private_key(bad)
    assert bad not in str(caught.value)


class TestThroughTheCli:
    async def test_verify_export_and_the_digest_leave_the_database(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """The digest is in the --json summary, `status RUN` and the database; `verify`
        exits 0 saying so; an edit makes it exit 1 naming the row; an export verifies alone,
        and after a full rewrite with fresh hashes `verify --against` catches it."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        env = {**cli_env(audit_url), "BATCHCANCEL_AUDIT_SIGNING_KEY": pem}
        sim = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
        sim.seed({str(n): OrderState.OPEN for n in range(10, 20)})
        rows = [{"venue": "sfox", "order_id": str(n)} for n in range(10, 20)]
        async with serve_simulators({"sfox": sim}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox={"rate_limit": 0})
            orders = write_orders_csv(tmp_path / "orders.csv", rows)
            ran = await run_cli(
                "run", str(orders), "--venues-config", str(config), "--json", env=env
            )
        summary = json.loads(ran.stdout)
        run_id, digest = summary["run_id"], summary["digest"]
        assert len(digest) == 64 and int(digest, 16) >= 0
        assert pem.splitlines()[1] not in ran.stdout + ran.stderr
        status = await run_cli("status", run_id, env=env)
        assert f"digest: {digest}" in status.stdout
        clock = json.loads(db_rows(audit_url, "select clock from runs")[0][0])
        assert clock["sync"] in ("synchronized", "unsynchronized", "unknown")
        verified = await run_cli("verify", run_id, env=env)
        assert verified.code == 0, verified.stdout + verified.stderr
        assert verified.stdout.startswith("intact: ") and f"digest {digest}" in verified.stdout
        assert "signature valid" in verified.stdout
        export = tmp_path / "run.jsonl"
        exported = await run_cli("export", run_id, "-o", str(export), env=env)
        assert exported.code == 0, exported.stderr
        for wrong in ((), (run_id, "--file", str(export))):  # usage: one line, exit 2
            usage = await run_cli("verify", *wrong, env=env)
            assert usage.code == 2 and usage.stderr.count("\n") == 1, usage.stderr
            assert "give a RUN, or --file FILE" in usage.stderr
        alone = await run_cli("verify", "--file", str(export), env={})
        assert alone.code == 0 and f"digest {digest}" in alone.stdout, alone.stdout
        # An edited answer: named.
        tamper(audit_url, "update attempts set http_status = 404 where http_status = 200 and "
                          "order_pk = (select min(pk) from orders)")  # fmt: skip
        edited = await run_cli("verify", run_id, env=env)
        assert edited.code == 1 and "attempts" in edited.stdout and "http_status" in edited.stdout
        tamper(audit_url, "update attempts set http_status = 200 where http_status = 404")
        # A rewrite of every hash: its digest no longer matches the sealed, signed one, and
        # the export still tells the truth.
        _rewrite_everything(audit_url, run_id, "filled_late")
        rewritten = await run_cli("verify", run_id, env=env)
        assert rewritten.code == 1 and "sealed" in rewritten.stdout, rewritten.stdout
        against = await run_cli("verify", run_id, "--against", str(export), env=env)
        assert against.code == 1 and "differs from the export" in against.stdout
