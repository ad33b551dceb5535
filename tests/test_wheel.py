"""The built wheel holds everything the commands need, the migrations above all.

A worker or an Airflow image installs batchcancel from its wheel, not from a checkout; a wheel
without the Alembic migrations fails every command. This builds the wheel with pip, as a
release would, from a copy of the package (so that nothing is written into the checkout and no
stale build/ folder there can add files), and lists what it holds. .ci/run goes further:
installs the wheel in a fresh virtualenv and runs `db upgrade` and `demo` from it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIGRATIONS = Path("batchcancel") / "migrations"


def build_wheel(source: Path, work: Path) -> Path:
    """`pip wheel --no-deps` of the project at `source`, built from a copy in `work`."""
    tree = work / "src"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(source / name, tree / name)
    shutil.copytree(
        source / "batchcancel",
        tree / "batchcancel",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    out = work / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(tree), "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [wheel] = out.glob("batchcancel-*.whl")
    return wheel


def expected_migrations(source: Path) -> list[str]:
    """The migration files a wheel of `source` must hold, as paths inside the wheel."""
    versions = sorted((source / MIGRATIONS / "versions").glob("*.py"))
    names = [MIGRATIONS / "env.py", MIGRATIONS / "script.py.mako"]
    names += [path.relative_to(source) for path in versions]
    return [name.as_posix() for name in names]


def test_wheel_ships_the_migrations(tmp_path: Path) -> None:
    """env.py, script.py.mako and every versions/*.py of the checkout are in the wheel, under
    batchcancel/migrations/, where the installed package looks for them."""
    expected = expected_migrations(REPO)
    assert "batchcancel/migrations/versions/0001_initial.py" in expected  # the checkout's own
    with zipfile.ZipFile(build_wheel(REPO, tmp_path)) as wheel:
        names = set(wheel.namelist())
    missing = [name for name in expected if name not in names]
    assert missing == [], f"the wheel lacks {missing}"
    assert "batchcancel/cli.py" in names and "batchcancel/py.typed" in names
    assert not any(name.startswith("migrations/") for name in names)  # no stray top level
