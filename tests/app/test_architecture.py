"""The house's rules, checked: import contracts, rooms of small modules, one place for task names,
and no demo machinery in a production process."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import orchestrator

ROOT = Path(orchestrator.__file__).resolve().parent.parent
PACKAGE = ROOT / "orchestrator"

#: The rooms, each mirrored by a folder of tests.
ROOMS = ("domain", "store", "services", "adapters", "app", "ops", "webhooks", "dev")
#: The demo machinery's modules (dev/), by name wherever they sit.
DEV_MODULES = (
    "demo",
    "demo_seed",
    "embedded",
    "salvy_standin",
    "simulator",
    "standin_file",
    "supervisor",
)
#: Longest module, in lines ("about 300").
MAX_LINES = 310
#: Modules allowed over it, and why.
LONG_ON_PURPOSE = {
    # Migration 0001's schema as data, compared column by column with a live database by the
    # adoption: one schema, one file.
    "store/adoption/baseline.py",
}


def _modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages([str(PACKAGE)], "orchestrator.")
        if not m.name.endswith("__main__")
    ]


def test_the_import_contracts_hold() -> None:
    """lint-imports: layers, a pure domain, no Celery below app/, no dev/ in production."""
    done = subprocess.run(
        [Path(sys.executable).with_name("lint-imports")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_room_is_a_package_with_a_folder_of_tests() -> None:
    for room in ROOMS:
        assert (PACKAGE / room / "__init__.py").is_file(), room
        assert (ROOT / "tests" / room / "__init__.py").is_file(), room


def test_every_module_imports() -> None:
    """A fresh install imports every module of every room (none left behind by a move)."""
    load = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
    found = subprocess.run(
        [sys.executable, "-c", load, *_modules()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.returncode == 0, found.stderr[-3000:]


def test_no_module_is_over_about_300_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert set(long) <= LONG_ON_PURPOSE, long


def test_the_task_names_live_in_one_module_and_are_the_ones_registered() -> None:
    from orchestrator import task_names

    code = (
        "from tasks import app; "
        "print(*sorted(n for n in app.tasks if n.startswith('orchestrator.')))"
    )
    env = {**os.environ, "ORCHESTRATOR_EMBEDDED": "0"}
    env.setdefault("DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    env.setdefault("REDIS_URL", "redis://127.0.0.1:1/0")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == sorted(task_names.ALL)


def test_a_production_process_with_its_urls_never_loads_the_demo_machinery() -> None:
    """A worker's imports (tasks, celeryconfig) and the CLI load nothing of orchestrator.dev."""
    code = (
        "import sys, tasks, celeryconfig, orchestrator.ops.cli, orchestrator.ops.metrics; "
        "import orchestrator.webhooks.app; "
        "from orchestrator.app import bootstrap; bootstrap.database_url(); bootstrap.redis_url(); "
        "print(*sorted(m for m in sys.modules if m.startswith('orchestrator.')))"
    )
    env = {
        **os.environ,
        "DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    env.pop("ORCHESTRATOR_EMBEDDED", None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = done.stdout.split()
    assert [m for m in loaded if m.startswith("orchestrator.dev")] == []
    assert [m for m in loaded if m.rsplit(".", 1)[1] in DEV_MODULES] == []
