"""The layering rules, checked: venues are sans-I/O, the job runner is standard library only,
and each fact the runner, the simulators and the CLI share has one source.

- venues/* import no I/O, clock or environment module (an AST walk of their imports,
  following batchcancel's own modules);
- batchcancel.jobs imports, in a fresh interpreter whose import system refuses anything
  outside the standard library, with batchcancel's modules judged by the same rule;
- the venue registry and the simulator registry name the same venues, and each simulator's
  limits are its adapter's;
- the runner's flags are options of `batchcancel run` and `kill` (read from the click
  commands), its contract values are the CLI's and the config's, and its resumable outcomes
  are batchcancel.outcomes'.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import click
import pytest

from batchcancel import contract
from batchcancel.cli import cli
from batchcancel.outcomes import GOOD, RESUMABLE, Outcome
from batchcancel.simulators import SIMULATORS
from batchcancel.venues import VENUES
from tests.conftest import CREDENTIALS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "batchcancel"
# What a sans-I/O module may not import: sockets, HTTP, databases, processes, threads, the
# clock (adapters are given `now`) and the environment (they are given their credentials).
NOT_SANS_IO = frozenset(
    {
        "aiohttp",
        "asyncio",
        "sqlalchemy",
        "alembic",
        "psycopg",
        "socket",
        "ssl",
        "selectors",
        "http",
        "urllib.request",
        "requests",
        "httpx",
        "subprocess",
        "threading",
        "time",
        "os",
    }
)


def _module_file(module: str) -> Path | None:
    """The source file of a batchcancel module, or None for another package's."""
    if module != "batchcancel" and not module.startswith("batchcancel."):
        return None
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names), at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from batchcancel.venues import base` imports the module batchcancel.venues.base
            for alias in node.names:
                path = _module_file(f"{node.module}.{alias.name}")
                if path is not None and path.exists():
                    found.add(f"{node.module}.{alias.name}")
    return found


def import_closure(*modules: str) -> set[str]:
    """The modules `modules` import, directly or through batchcancel's own modules."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        if path is not None and path.exists():
            todo.extend(_imports(path))
    return seen


def _forbidden(closure: set[str]) -> set[str]:
    return {m for m in closure if m in NOT_SANS_IO or m.split(".")[0] in NOT_SANS_IO}


def test_venues_are_sans_io() -> None:
    """No venue module imports, directly or through batchcancel modules, anything that does
    I/O, reads the clock or the environment."""
    venue_modules = [f"batchcancel.venues.{p.stem}" for p in (PACKAGE / "venues").glob("*.py")]
    closure = import_closure("batchcancel.venues", *venue_modules)
    assert "batchcancel.venues.tanx" in closure and "batchcancel.outcomes" in closure
    assert _forbidden(closure) == set()


def test_the_import_walk_sees_io() -> None:
    """The walk that proves the venues clean finds the transport's aiohttp and the engine's
    asyncio: it can fail."""
    assert "aiohttp" in _forbidden(import_closure("batchcancel.transport"))
    assert "asyncio" in _forbidden(import_closure("batchcancel.lanes"))


# A fresh interpreter whose import system refuses every module outside the standard library
# (batchcancel's own are let through, and their imports judged the same way), then imports
# the module named in argv[1] and prints the batchcancel modules it loaded.
STDLIB_ONLY = r"""
import importlib, sys

class StdlibOnly:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top == "batchcancel":
            return None  # the normal finders take it from here
        raise ImportError(f"not standard library: {name}")

sys.meta_path.insert(0, StdlibOnly())
importlib.import_module(sys.argv[1])
print(" ".join(sorted(m for m in sys.modules if m.startswith("batchcancel"))))
"""


def _import_stdlib_only(module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", STDLIB_ONLY, module],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_job_runner_is_standard_library_only() -> None:
    """batchcancel.jobs, and every batchcancel module it loads, import in a Python that has
    nothing but the standard library (an Airflow worker's, where SQLAlchemy is pinned below
    2): no click, no SQLAlchemy, no aiohttp."""
    done = _import_stdlib_only("batchcancel.jobs")
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(done.stdout.split())
    assert {"batchcancel.jobs.runner", "batchcancel.outcomes", "batchcancel.venues"} <= loaded
    assert not loaded & {"batchcancel.cli", "batchcancel.config", "batchcancel.audit"}


def test_the_stdlib_only_import_refuses_others() -> None:
    """The same interpreter refuses the CLI, which needs click: the check can fail."""
    done = _import_stdlib_only("batchcancel.cli")
    assert done.returncode != 0
    assert "not standard library" in done.stderr


def test_every_venue_has_its_simulator() -> None:
    """The two registries name the same venues, and each simulator is of its adapter."""
    assert list(VENUES) == list(SIMULATORS)
    for name, simulator in SIMULATORS.items():
        assert simulator.name == name and simulator.venue is VENUES[name]


@pytest.mark.parametrize("name", list(SIMULATORS))
def test_simulators_enforce_their_adapters_limits(name: str) -> None:
    """A simulator's default limits are its adapter's documented ones: the rate limit and
    period, the pause after exceeding them (the adapter's cooldown), the list route's own
    limit (sFOX) and the most rows a list page has."""
    adapter = VENUES[name]
    simulator = SIMULATORS[name](credentials=CREDENTIALS)
    defaults = adapter.defaults
    assert (simulator.rate_limit, simulator.period, simulator.penalty) == (
        defaults.rate_limit,
        defaults.period,
        defaults.cooldown,
    )
    route = adapter.list_limit
    expected_route = (route.rate_limit, route.period, route.cooldown) if route else None
    got_route = (simulator.list_rate_limit, simulator.list_period, simulator.list_penalty)
    assert (got_route if simulator.list_rate_limit is not None else None) == expected_route
    assert simulator.list_max == adapter.list_page_size
    # Given limits still win over the adapter's.
    tuned = SIMULATORS[name](credentials=CREDENTIALS, rate_limit=None, period=2.0, penalty=0.5)
    assert (tuned.rate_limit, tuned.period, tuned.penalty) == (None, 2.0, 0.5)


def _options(command: str) -> dict[str, click.Parameter]:
    group = cli
    assert isinstance(group, click.Group)
    found = group.commands[command]
    return {opt: param for param in found.params for opt in param.opts}


def _every_option_job(tmp_path: Path) -> tuple[list[str], list[str]]:
    """The argv of a query job and of a CSV job with every option the runner passes on."""
    from batchcancel import jobs

    (tmp_path / "orders.csv").write_text("venue,order_id\nsfox,1\n", encoding="utf-8")
    (tmp_path / "venues.toml").write_text("[venues.sfox]\n", encoding="utf-8")
    common = (
        'venues = ["sfox"]\nvenues_config = "venues.toml"\nreason = "r"\ndeadline = 5\n'
        "max_attempts = 2\nconfirm = true\nbulk = true\nall_open = true\n"
    )
    argvs = []
    for command, source in (
        ("run", 'query = "select 1"\nsource_db_env = "DESK"\n'),
        ("kill", 'source = "orders.csv"\n'),
    ):
        path = tmp_path / f"{command}.toml"
        path.write_text(f'[job]\ncommand = "{command}"\n{source}{common}', encoding="utf-8")
        invocation = jobs.build_invocation(
            jobs.load_job(path),
            venue="sfox",
            key="k",
            environ={contract.DB_VAR: "sqlite:///a.db", "DESK": "sqlite:///d.db"},
        )
        argvs.append(list(invocation.argv))
    return argvs[0], argvs[1]


def test_the_runners_flags_are_the_clis(tmp_path: Path) -> None:
    """Every flag the runner gives `batchcancel run|kill` is an option of that command, and
    so is every flag of its table; switches stay switches and values take a value."""
    from batchcancel.jobs import invocation

    for argv, command in zip(_every_option_job(tmp_path), ("run", "kill"), strict=True):
        options = _options(command)
        assert argv[argv.index(command) + 1] in ("-", "--query")
        given = [arg for arg in argv if arg.startswith("--")]
        assert set(given) <= set(options), set(given) - set(options)
        assert set(given) <= set(invocation.FLAGS)
        for _, flag in invocation.SWITCHES:
            assert flag in given and options[flag].is_flag  # type: ignore[attr-defined]
        for _, flag in invocation.VALUE_FLAGS:
            assert not options[flag].is_flag  # type: ignore[attr-defined]
            assert argv[argv.index(flag) + 1] != ""
    for command in ("run", "kill"):
        assert set(invocation.FLAGS) <= set(_options(command))


def test_the_runners_contract_is_the_clis() -> None:
    """The environment variables, the confirm timeout and the run key's length the runner
    relies on are the CLI's, the config's and the audit table's."""
    from batchcancel import config
    from batchcancel.audit import tables
    from batchcancel.jobs import invocation, jobfile
    from batchcancel.redact import Redactor

    for command in ("run", "kill"):
        options = _options(command)
        assert options["--db"].envvar == contract.DB_VAR == config.DB_VAR
        assert options["--source-db"].envvar == contract.SOURCE_DB_VAR
        assert options["--venues-config"].envvar == contract.VENUES_VAR == config.VENUES_VAR
        assert options["--confirm-timeout"].default == contract.CONFIRM_TIMEOUT
    column = tables.Run.__table__.c.run_key
    assert column.type.length == contract.MAX_RUN_KEY  # type: ignore[attr-defined]
    assert jobfile.known_venues() == tuple(VENUES)
    for text in ("postgresql://u:pw@h/d", "a mysql://me:p@ss w@rd@h/x b", "sqlite:///x.db"):
        assert invocation.hide_passwords(text) == Redactor().text(text)


def test_the_runners_resumable_outcomes_are_batchcancels() -> None:
    """An exit 1 is retried exactly when some order's outcome is one batchcancel resumes:
    each outcome that needs attention, alone, is retryable iff it is in outcomes.RESUMABLE."""
    from batchcancel.jobs import runner

    assert runner.RESUMABLE is RESUMABLE
    for outcome in Outcome:
        if outcome in GOOD:
            continue
        summary = {"run_id": "r", "status": "attention", "orders": 1, "outcomes": {outcome: 1}}
        _, retryable, _ = runner.classify(1, summary)
        assert retryable == (outcome in RESUMABLE), outcome
