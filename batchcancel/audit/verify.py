"""`verify` and `export`: recompute a run's hash chains and check every audit row against them.

Two checks, each naming the first thing that does not match. The chains: every link's hash
recomputed from its facts (re-serialised in RFC 8785 form: tests/test_chain.py checks the
writer's serialisation against the rfc8785 library; that library took a quarter of verify's
time on a million orders, so verify uses the same C-backed form), numbers without gaps, each
link naming the one before. The rows: the facts replayed in the order the database numbered
their links (audit/verify_replay.py) give what every row of the run must hold now (runs,
sessions, orders, attempts, requests, books); an edited value, a deleted row or an inserted row
differs from that (audit/verify_rows.py). An export is the links as JSON lines, verifiable with
no database.

Everything streams: links are read a few at a time and dropped once replayed, rows are read in
key order beside the expectation, exports are written and read line by line; what stays in
memory is the expectation, one compact row per order and attempt. Each command reads one
snapshot of the database, so a run still in progress is checked up to one commit.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import sqlalchemy as sa

from batchcancel.audit.chain import GENESIS, ChainHead, canonical, link_hash, run_digest
from batchcancel.audit.verify_replay import Expected
from batchcancel.audit.verify_rows import compare, loaded_keys

__all__ = [
    "EXPORT_FORMAT",
    "ChainCheck",
    "Verdict",
    "export_run",
    "read_links",
    "verify_against",
    "verify_file",
    "verify_run",
]

EXPORT_FORMAT: Final = "batchcancel-export/1"
_LINKS: Final = (
    "SELECT pk, chain_id, seq, prev, hash, facts FROM chain_links WHERE run_id = :run ORDER BY pk"
)
_LINK_BATCH: Final = 32  # links per fetch from a server-side cursor: a loader link is ~1 MB
_ROW_BATCH: Final = 5000
_NAMED: Final = re.compile(r":(\w+)")
_EXPORTED: Final = ("chain_id", "seq", "prev", "hash", "facts")


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


class ChainCheck:
    """A run's chains checked link by link, in the order the database numbered them: each
    link's number follows its chain's last, it names that link's hash, its facts are in
    canonical form and its hash covers them. Stops at the first problem."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.facts = 0
        self.problem = ""
        self._last: dict[str, tuple[int, str]] = {}

    def add(self, chain_id: str, seq: Any, prev: str, hash_: str, text: str) -> list[Any] | None:
        """The link's facts, parsed; None if it breaks its chain (then `problem` says how)."""
        seq = int(seq)
        previous_seq, previous_hash = self._last.get(chain_id, (0, GENESIS))
        if seq != previous_seq + 1:
            return self._broken(
                chain_id, seq, f"expected link {previous_seq + 1} (a link was deleted, "
                "inserted or moved)",
            )  # fmt: skip
        if prev != previous_hash:
            return self._broken(
                chain_id, seq, f"does not follow link {previous_seq} (reordered or rewritten)"
            )
        try:
            facts = json.loads(text)
        except ValueError:
            return self._broken(chain_id, seq, "its facts are not JSON")
        facts_bytes = canonical(facts)
        if facts_bytes.decode() != text:
            return self._broken(chain_id, seq, "its facts are not in canonical form (edited)")
        if link_hash(self.run_id, chain_id, seq, previous_hash, facts_bytes) != hash_:
            return self._broken(chain_id, seq, "its hash does not match its facts (edited)")
        self._last[chain_id] = (seq, hash_)
        self.facts += len(facts)
        return facts  # type: ignore[no-any-return]

    def _broken(self, chain_id: str, seq: int, what: str) -> list[Any] | None:
        self.problem = f"chain {chain_id} link {seq}: {what}"
        return None

    def digest(self) -> str:
        """The run digest the chains give ("" once one is broken)."""
        if self.problem:
            return ""
        return run_digest(ChainHead(c, s, h) for c, (s, h) in self._last.items())


class _Snapshot:
    """One read-only view of the database for a whole command: REPEATABLE READ on
    PostgreSQL, one read transaction on SQLite (WAL), so links and rows agree. Rows come
    straight from the driver's cursor (SQLAlchemy's rows cost a fifth of verify's time)."""

    def __init__(self, conn: sa.Connection, run_id: str) -> None:
        self._driver = conn.connection.driver_connection
        self._run_id = run_id
        self._postgres = conn.dialect.name == "postgresql"
        self._cursors = 0

    def rows(self, sql: str, batch: int = _ROW_BATCH) -> Iterator[Any]:
        """The rows of `sql` (its one parameter is :run) as tuples, fetched as they are read."""
        assert self._driver is not None
        if self._postgres:  # a server-side cursor: the client holds `batch` rows at a time
            self._cursors += 1
            cursor = self._driver.cursor(name=f"batchcancel_verify_{self._cursors}")
            cursor.itersize = batch
            sql = _NAMED.sub(r"%(\1)s", sql)
        else:  # sqlite3 steps its statement as rows are taken
            cursor = self._driver.cursor()
        try:
            cursor.execute(sql, {"run": self._run_id})
            yield from cursor
        finally:
            cursor.close()

    def links(self) -> Iterator[Any]:
        """(pk, chain_id, seq, prev, hash, facts) of every link, in the database's order."""
        return self.rows(_LINKS, _LINK_BATCH)


@contextlib.contextmanager
def _snapshot(engine: sa.Engine, run_id: str) -> Iterator[_Snapshot]:
    with _collector_paused(), engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        else:
            conn.exec_driver_sql("BEGIN")  # the sqlite3 module opens none for reads
        yield _Snapshot(conn, run_id)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while millions of rows are replayed: nothing here
    makes cycles, and its passes over the growing expectation cost more than all the rest."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_links(engine: sa.Engine, run_id: str) -> list[dict[str, Any]]:
    """The run's links in the order the database numbered them (all in memory: for tests and
    small runs; verify and export stream them)."""
    with _snapshot(engine, run_id) as snapshot:
        names = ("pk", "chain_id", "seq", "prev", "hash", "facts")
        return [dict(zip(names, link, strict=True)) for link in snapshot.links()]


def verify_run(engine: sa.Engine, run_id: str) -> Verdict:
    """Recompute the run's chains from the database and check every row against them."""
    with _snapshot(engine, run_id) as snapshot:
        return _verify(snapshot, run_id)


def _verify(snapshot: _Snapshot, run_id: str) -> Verdict:
    check = ChainCheck(run_id)
    expected = Expected(loaded_keys(snapshot.rows))
    failed: Exception | None = None
    links = 0
    for _pk, chain_id, seq, prev, hash_, text in snapshot.links():
        links += 1
        facts = check.add(chain_id, seq, prev, hash_, text)
        if facts is None:
            return Verdict(check.facts, "", check.problem)
        if failed is None:
            try:
                expected.apply(facts, chain_id, seq)
            except Exception as exc:  # a broken link further on is named first, as always
                failed = exc
    if failed is not None:
        raise failed
    if not links:
        return Verdict(0, check.digest(), f"run {run_id} has no recorded facts")
    expected.keys = {}
    return Verdict(check.facts, check.digest(), compare(snapshot.rows, run_id, expected))


# -- export: the links as JSON lines -----------------------------------------------------------


def _header(run_id: str, digest: str) -> str:
    return json.dumps({"format": EXPORT_FORMAT, "run_id": run_id, "digest": digest}) + "\n"


def export_run(engine: sa.Engine, run_id: str, path: Path) -> Verdict:
    """Write every link of the run (its facts inside) to `path`; what verify says of them."""
    check = ChainCheck(run_id)
    with _snapshot(engine, run_id) as snapshot, path.open("w", encoding="utf-8") as out:
        # The digest is known at the end: the header is written first with a stand-in of the
        # same length and rewritten in place (a broken chain's empty digest padded with
        # blanks, which JSON allows).
        stand_in = _header(run_id, GENESIS)
        out.write(stand_in)
        for _pk, *link in snapshot.links():
            if not check.problem:
                check.add(*link)
            out.write(json.dumps(dict(zip(_EXPORTED, link, strict=True))) + "\n")
        out.seek(0)
        out.write(_header(run_id, check.digest())[:-1].ljust(len(stand_in) - 1) + "\n")
    return Verdict(check.facts, check.digest(), check.problem)


def _open_export(path: Path, lines: IO[str]) -> tuple[str, str]:
    """(run id, digest) of an export's header line."""
    header = json.loads(_line(next(lines, "")) or "{}")
    if header.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path} is not a batchcancel export")
    return str(header["run_id"]), str(header.get("digest", ""))


def _line(line: str) -> str:
    return line[:-1] if line.endswith("\n") else line


def _exported_links(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The links of an export after its header, one line at a time."""
    for line in lines:
        text = _line(line)
        if text:
            yield json.loads(text)


def verify_file(path: Path) -> Verdict:
    """Check an export on its own: its chains, and that they give the digest it states."""
    with _collector_paused(), path.open(encoding="utf-8") as lines:
        run_id, stated = _open_export(path, lines)
        check = ChainCheck(run_id)
        for link in _exported_links(lines):
            if check.add(*(link[k] for k in ("chain_id", "seq", "prev", "hash", "facts"))) is None:
                return Verdict(check.facts, "", check.problem)
    digest = check.digest()
    problem = (
        f"the export states digest {stated}, its links give {digest}" if stated != digest else ""
    )
    return Verdict(check.facts, digest, problem)


def _fingerprint(facts: object) -> bytes | None:
    """A link's facts, compared by their SHA-256 (the database's links are held this way)."""
    if not isinstance(facts, str):
        return None
    return hashlib.sha256(facts.encode("utf-8", "surrogatepass")).digest()


def verify_against(engine: sa.Engine, run_id: str, path: Path) -> Verdict:
    """The database still holds every link of an earlier export, unchanged (a rewrite that
    recomputed every hash is caught here), and is intact itself."""
    with _collector_paused(), path.open(encoding="utf-8") as lines:
        exported_run, _ = _open_export(path, lines)
        if exported_run != run_id:
            return Verdict(0, "", f"{path} is an export of run {exported_run}, not {run_id}")
        with _snapshot(engine, run_id) as snapshot:
            current: dict[tuple[str, int], tuple[str, bytes | None]] = {
                (chain_id, seq): (hash_, _fingerprint(text))
                for _pk, chain_id, seq, _prev, hash_, text in snapshot.links()
            }
            problem = _unlike_export(current, _exported_links(lines))
            if problem:
                return Verdict(0, "", problem)
            del current
            return _verify(snapshot, run_id)


def _unlike_export(
    current: dict[tuple[str, int], tuple[str, bytes | None]], exported: Iterable[dict[str, Any]]
) -> str:
    for link in exported:
        now = current.get((link["chain_id"], link["seq"]))
        name = f"chain {link['chain_id']} link {link['seq']}"
        if now is None:
            return f"{name}: in the export, no longer in the database"
        if now[0] != link["hash"] or now[1] != _fingerprint(link["facts"]):
            return f"{name}: differs from the export (rewritten)"
    return ""
