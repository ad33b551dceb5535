"""`verify` and `export`: recompute a run's hash chains and check every audit row against them.

Two checks, each naming the first thing that does not match. The chains: every link's hash
recomputed from its facts (re-serialised in RFC 8785 form: tests/test_chain.py checks the
writer's serialisation against the rfc8785 library; that library took a quarter of verify's
time on a million orders, so verify uses the same C-backed form),
numbers without gaps, each link naming the one before. The rows: the facts replayed in the
order the database numbered their links give what every row of the run must hold now (runs,
sessions, orders, attempts, requests, books); an edited value, a deleted row or an inserted row
differs from that. An export is the links as JSON lines, verifiable with no database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from batchcancel.audit.chain import (
    GENESIS,
    ChainHead,
    canonical,
    link_hash,
    run_digest,
    stamp,
)

__all__ = ["Verdict", "export_run", "read_links", "verify_file", "verify_links", "verify_run"]

EXPORT_FORMAT: Final = "batchcancel-export/1"
# The columns each fact kind sets; verify compares exactly these (operational columns such as
# the run lock, lane leases and the digest itself are not facts).
RUN_FIELDS: Final = (
    "run_key", "command", "dry_run", "source", "options", "reason", "os_user", "host", "pid",
    "command_line", "version", "created_at", "clock", "status", "orders_total", "duplicates",
    "started_at", "finished_at", "sessions",
)  # fmt: skip
SESSION_FIELDS: Final = (
    "command", "os_user", "host", "pid", "command_line", "version", "started_at",
    "finished_at", "status",
)  # fmt: skip
ORDER_FIELDS: Final = (
    "seq", "venue", "order_id", "account_id", "symbol", "state", "outcome", "reason",
    "attempts", "last_http_status", "first_sent_at", "last_answer_at", "listed_by",
)  # fmt: skip
ATTEMPT_FIELDS: Final = (
    "run_id", "worker", "kind", "sent_at", "answered_at", "http_status", "verdict",
    "latency_us", "detail",
)  # fmt: skip
BOOK_FIELDS: Final = (
    "verdict", "listed", "from_input", "cancelled", "working_at_end", "lists", "started_at",
    "first_request_at", "last_answer_at", "flat_at", "seconds_to_flat_us", "detail",
)  # fmt: skip
REQUEST_FIELDS: Final = (
    "venue", "kind", "target", "worker", "sent_at", "answered_at", "http_status", "verdict",
    "latency_us", "detail",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verdict:
    """What verify found: intact with N facts and the digest, or the first problem."""

    facts: int
    digest: str
    problem: str = ""

    @property
    def intact(self) -> bool:
        return not self.problem

    def line(self) -> str:
        if self.intact:
            return f"intact: {self.facts} facts, digest {self.digest}"
        return f"not intact: {self.problem}"


@dataclass
class _Expected:
    """The rows the facts say the run holds now."""

    run: dict[str, Any] = field(default_factory=dict)
    sessions: dict[int, dict[str, Any]] = field(default_factory=dict)
    orders: dict[Any, dict[str, Any]] = field(default_factory=dict)  # by pk, or ("seq", n)
    attempts: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    requests: dict[int, dict[str, Any]] = field(default_factory=dict)
    books: dict[str, dict[str, Any]] = field(default_factory=dict)  # by venue
    where: dict[tuple[str, Any], str] = field(default_factory=dict)  # row -> link that set it


def read_links(engine: sa.Engine, run_id: str) -> list[dict[str, Any]]:
    """The run's links in the order the database numbered them."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT pk, chain_id, seq, prev, hash, facts FROM chain_links "
                "WHERE run_id = :run ORDER BY pk"
            ),
            {"run": run_id},
        ).mappings()
        return [dict(row) for row in rows]


def verify_links(run_id: str, links: Sequence[dict[str, Any]]) -> tuple[str, int, str]:
    """(first problem or "", number of facts, digest) of the chains alone."""
    last: dict[str, tuple[int, str]] = {}
    count = 0
    for link in links:
        chain, seq = link["chain_id"], int(link["seq"])
        name = f"chain {chain} link {seq}"
        previous_seq, previous_hash = last.get(chain, (0, GENESIS))
        if seq != previous_seq + 1:
            return (
                f"{name}: expected link {previous_seq + 1} (a link was deleted, inserted or moved)",
                count,
                "",
            )
        if link["prev"] != previous_hash:
            return (
                f"{name}: does not follow link {previous_seq} (reordered or rewritten)",
                count,
                "",
            )
        try:
            facts = json.loads(link["facts"])
        except ValueError:
            return f"{name}: its facts are not JSON", count, ""
        facts_bytes = canonical(facts)
        if facts_bytes.decode() != link["facts"]:
            return f"{name}: its facts are not in canonical form (edited)", count, ""
        if link_hash(run_id, chain, seq, previous_hash, facts_bytes) != link["hash"]:
            return f"{name}: its hash does not match its facts (edited)", count, ""
        last[chain] = (seq, link["hash"])
        link["parsed"] = facts  # replayed next: parsed once (a million orders: 2 s each time)
        count += len(facts)
    digest = run_digest(ChainHead(c, s, h) for c, (s, h) in last.items())
    return "", count, digest


def _replay(links: Iterable[Mapping[str, Any]]) -> _Expected:
    """Apply every fact, in link order, to the rows it describes."""
    state = _Expected()
    for link in links:
        label = f"chain {link['chain_id']} link {link['seq']}"
        for fact in link.get("parsed") or json.loads(link["facts"]):
            _apply(state, fact, label)
    return state


def _apply(state: _Expected, fact: Mapping[str, Any], label: str) -> None:
    kind = fact["t"]
    order = state.orders
    if kind == "run":
        state.run = {k: fact.get(k) for k in RUN_FIELDS}
        state.where["runs", None] = label
    elif kind in ("status", "totals", "session", "session_end"):
        for key, value in fact.get("run", {}).items():
            state.run[key] = value
        if kind in ("session", "session_end"):
            row = state.sessions.setdefault(fact["id"], {})
            row.update({k: fact[k] for k in SESSION_FIELDS if k in fact})
            state.where["sessions", fact["id"]] = label
        state.where["runs", None] = label
    elif kind == "orders":
        for values in fact["rows"]:
            row = dict(zip(("seq", "venue", "order_id", "account_id", "symbol", "state",
                            "outcome", "reason"), values, strict=True))  # fmt: skip
            row.update(attempts=0, last_http_status=None, first_sent_at=None, last_answer_at=None,
                       listed_by=None)  # fmt: skip
            order["seq", row["seq"]] = row
            state.where["orders", ("seq", row["seq"])] = label
    elif kind == "listed":  # orders a venue's list showed that the run did not hold
        for values in fact["orders"]:
            order[values["pk"]] = {k: values.get(k) for k in ORDER_FIELDS}
            state.where["orders", values["pk"]] = label
    elif kind == "book":
        state.books[fact["venue"]] = {k: fact.get(k) for k in BOOK_FIELDS}
        state.where["books", fact["venue"]] = label
    elif kind == "swept":
        order[fact["pk"]] = {k: fact.get(k) for k in ORDER_FIELDS}
        state.attempts[fact["pk"], 1] = dict(fact["attempt"])
        state.where["orders", fact["pk"]] = label
        state.where["attempts", (fact["pk"], 1)] = label
    elif kind == "begin":
        key = (fact["pk"], fact["attempt"])
        state.attempts[key] = {
            "run_id": fact["run_id"], "worker": fact["worker"], "kind": fact["kind"],
            "sent_at": fact["sent_at"], "answered_at": None, "http_status": None,
            "verdict": None, "latency_us": None, "detail": "",
        }  # fmt: skip
        row = _order(state, fact["pk"])
        if fact["kind"] != "confirm":
            row["state"] = "sending"
        row["attempts"] = fact["attempt"]
        row["first_sent_at"] = row.get("first_sent_at") or fact["sent_at"]
        state.where["attempts", key] = label
    elif kind in ("answer", "late"):
        key = (fact["pk"], fact["attempt"])
        attempt = state.attempts.setdefault(key, {})
        attempt.update({k: fact[k] for k in ATTEMPT_FIELDS[4:]})
        state.where["attempts", key] = label
        if kind == "answer":
            row = _order(state, fact["pk"])
            row.update(state=fact["state"], outcome=fact["outcome"], reason=fact["reason"],
                       last_http_status=fact["http_status"], last_answer_at=fact["answered_at"])  # fmt: skip
    elif kind == "orders_set":  # recover, reset, settle, release: rows and values changed
        for pk in fact["pks"]:
            _order(state, pk).update(fact["values"])
        for pk, attempt in fact.get("attempts", []):
            state.attempts.setdefault((pk, attempt), {}).update(fact.get("attempt_values", {}))
    elif kind == "request":
        state.requests[fact["pk"]] = {k: fact.get(k) for k in REQUEST_FIELDS}
        state.where["requests", fact["pk"]] = label
    elif kind == "request_answer":
        state.requests.setdefault(fact["pk"], {}).update({k: fact[k] for k in REQUEST_FIELDS[5:]})
    else:
        raise ValueError(f"unknown fact {kind!r} in {label}")


def _order(state: _Expected, pk: int) -> dict[str, Any]:
    """An order by its key; loaded orders are known by row number until a fact names the key
    (the mapping from key to row number is checked against the database's rows)."""
    return state.orders.setdefault(pk, {})


def verify_run(engine: sa.Engine, run_id: str) -> Verdict:
    """Recompute the run's chains from the database and check every row against them."""
    links = read_links(engine, run_id)
    problem, count, digest = verify_links(run_id, links)
    if problem:
        return Verdict(count, digest, problem)
    if not links:
        return Verdict(0, digest, f"run {run_id} has no recorded facts")
    problem = _compare(engine, run_id, _replay(links))
    return Verdict(count, digest, problem)


def _rows(conn: sa.Connection, sql: str, run_id: str) -> Iterator[dict[str, Any]]:
    """The rows of `sql` (one :r parameter) as dicts, without SQLAlchemy's per-row mapping
    objects (they took a third of verify's time on a million orders)."""
    result = conn.execute(sa.text(sql), {"r": run_id})
    columns = list(result.keys())
    for row in result.fetchall():
        yield dict(zip(columns, row, strict=True))


def _compare(engine: sa.Engine, run_id: str, expected: _Expected) -> str:
    with engine.connect() as conn:
        run = next(_rows(conn, "SELECT * FROM runs WHERE id = :r", run_id), None)
        if run is None:
            return f"runs {run_id}: the row is missing"
        for key in RUN_FIELDS:
            if _value(run[key]) != expected.run.get(key):
                return _differs("runs", run_id, key, run[key], expected.run.get(key))
        sessions = _rows(conn, "SELECT * FROM sessions WHERE run_id = :r", run_id)
        problem = _same_rows(
            "sessions", {r["id"]: r for r in sessions}, expected.sessions, SESSION_FIELDS
        )
        if problem:
            return problem
        by_pk = {}
        known = expected.orders
        for row in _rows(conn, "SELECT * FROM orders WHERE run_id = :r", run_id):
            pk, seq = row["pk"], row["seq"]
            if seq and ("seq", seq) in known:  # loaded orders take their key from the database
                loaded = known.pop(("seq", seq))
                loaded.update(known.pop(pk, {}))
                known[pk] = loaded
            by_pk[pk] = row
        problem = _same_rows("orders", by_pk, known, ORDER_FIELDS)
        if problem:
            return problem
        attempts = _rows(
            conn,
            "SELECT a.* FROM attempts a JOIN orders o ON o.pk = a.order_pk WHERE o.run_id = :r",
            run_id,
        )
        problem = _same_rows(
            "attempts",
            {(r["order_pk"], r["attempt"]): _with_us(r) for r in attempts},
            expected.attempts,
            ATTEMPT_FIELDS,
        )
        if problem:
            return problem
        requests = _rows(conn, "SELECT * FROM requests WHERE run_id = :r", run_id)
        problem = _same_rows(
            "requests", {r["pk"]: _with_us(r) for r in requests}, expected.requests, REQUEST_FIELDS
        )
        if problem:
            return problem
        books = _rows(conn, "SELECT * FROM books WHERE run_id = :r", run_id)
        return _same_rows(
            "books", {r["venue"]: _book_us(r) for r in books}, expected.books, BOOK_FIELDS
        )


def _with_us(values: dict[str, Any]) -> dict[str, Any]:
    """A row with its latency as whole microseconds, as facts hold it (facts carry no floats)."""
    latency = values.get("latency_ms")
    values["latency_us"] = None if latency is None else round(latency * 1000)
    return values


def _book_us(values: dict[str, Any]) -> dict[str, Any]:
    """A books row with its seconds to flat as whole microseconds, as facts hold it."""
    seconds = values.get("seconds_to_flat")
    values["seconds_to_flat_us"] = None if seconds is None else round(seconds * 1_000_000)
    return values


def _same_rows(
    table: str,
    actual: Mapping[Any, Mapping[str, Any]],
    expected: Mapping[Any, Mapping[str, Any]],
    fields: Sequence[str],
) -> str:
    for key in sorted(set(actual) | set(expected), key=_order_of):
        row, wanted = actual.get(key), expected.get(key)
        if row is None:
            return f"{table} {_key(key)}: the row is missing (deleted)"
        if wanted is None:
            return f"{table} {_key(key)}: the row is in no recorded fact (inserted)"
        for name in fields:
            value, recorded = row.get(name), wanted.get(name)
            if value != recorded and _value(value) != recorded:  # the common case costs one ==
                return _differs(table, key, name, value, recorded)
    return ""


def _order_of(key: Any) -> tuple[int, Any]:
    """Keys in database order; an order known only by its row number ("seq", n) after them."""
    return (1, key) if isinstance(key, tuple) and key[:1] == ("seq",) else (0, key)


def _value(value: Any) -> Any:
    """A database value as facts hold it."""
    if hasattr(value, "isoformat"):
        return stamp(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _differs(table: str, key: Any, name: str, actual: Any, expected: Any) -> str:
    return f"{table} {_key(key)}: {name} is {_value(actual)!r}, the chain recorded {expected!r}"


def _key(key: Any) -> str:
    return "/".join(str(k) for k in key) if isinstance(key, tuple) else str(key)


# -- export: the links as JSON lines -----------------------------------------------------------


def export_run(engine: sa.Engine, run_id: str, path: Path) -> Verdict:
    """Write every link of the run (its facts inside) to `path`; what verify says of them."""
    links = read_links(engine, run_id)
    problem, count, digest = verify_links(run_id, links)
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"format": EXPORT_FORMAT, "run_id": run_id, "digest": digest}) + "\n")
        for link in links:
            out.write(
                json.dumps({k: link[k] for k in ("chain_id", "seq", "prev", "hash", "facts")})
                + "\n"
            )
    return Verdict(count, digest, problem)


def _file_links(path: Path) -> tuple[str, str, list[dict[str, Any]]]:
    lines = iter(path.read_text(encoding="utf-8").splitlines())
    header = json.loads(next(lines, "{}") or "{}")
    if header.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path} is not a batchcancel export")
    return (
        str(header["run_id"]),
        str(header.get("digest", "")),
        [json.loads(line) for line in lines if line],
    )


def verify_file(path: Path) -> Verdict:
    """Check an export on its own: its chains, and that they give the digest it states."""
    run_id, stated, links = _file_links(path)
    problem, count, digest = verify_links(run_id, links)
    if not problem and stated != digest:
        problem = f"the export states digest {stated}, its links give {digest}"
    return Verdict(count, digest, problem)


def verify_against(engine: sa.Engine, run_id: str, path: Path) -> Verdict:
    """The database still holds every link of an earlier export, unchanged (a rewrite that
    recomputed every hash is caught here), and is intact itself."""
    exported_run, _, exported = _file_links(path)
    if exported_run != run_id:
        return Verdict(0, "", f"{path} is an export of run {exported_run}, not {run_id}")
    current = {(link["chain_id"], link["seq"]): link for link in read_links(engine, run_id)}
    for link in exported:
        now = current.get((link["chain_id"], link["seq"]))
        name = f"chain {link['chain_id']} link {link['seq']}"
        if now is None:
            return Verdict(0, "", f"{name}: in the export, no longer in the database")
        if now["hash"] != link["hash"] or now["facts"] != link["facts"]:
            return Verdict(0, "", f"{name}: differs from the export (rewritten)")
    return verify_run(engine, run_id)
