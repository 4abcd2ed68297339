"""Embedded servers only where SPEC allows them: ORCHESTRATOR_EMBEDDED=1, or servers a demo left.

With DATABASE_URL / REDIS_URL unset and no flag, a production process (CLI verb, Celery worker or
beat) fails at once with one line and starts nothing; with the flag, real servers start under the
data dir; a test session stops the servers it started and only those.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from orchestrator.app.settings import ROOT
from orchestrator.dev import embedded
from tests.support import servers

pytestmark = pytest.mark.embedded

#: Every command line that needs the database, as an operator would type it.
VERBS = [
    ["migrate"],
    ["status"],
    ["status", "--json"],
    ["plan"],
    ["check"],
    ["replace", "+5511999990000"],
    ["cancel", "+5511999990000"],
    ["metrics", "--port", "0"],
]


def bare_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A shell with nothing configured: no URL, no embedded flag, .data/ at data_dir."""
    unset = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "ORCHESTRATOR_EMBEDDED")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return {**env, "ORCHESTRATOR_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **extra}


def run(argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run argv from the repository root; a process still running at timeout is killed (group)."""
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{argv} still running after {timeout}s:\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def processes_under(path: Path) -> list[str]:
    """Live processes whose command line or working directory is under path (postgres, redis)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        where = [*(info["cmdline"] or []), info["cwd"] or ""]
        if any(str(path) in part for part in where):
            found.append(f"{info['pid']} {' '.join(info['cmdline'] or [])}")
    return found


def stop_servers(data_dir: Path) -> None:
    embedded.stop_redis(data_dir)
    embedded.stop_postgres(data_dir)


@pytest.fixture
def scratch() -> Iterator[Path]:
    with servers.scratch_dir("embedded") as path:
        yield path


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    """A data dir whose embedded servers were started with ORCHESTRATOR_EMBEDDED=1 (a demo's)."""
    with servers.scratch_dir("embedded") as path:
        first = run(cli("migrate"), bare_env(path, ORCHESTRATOR_EMBEDDED="1"))
        assert first.returncode == 0, first.stderr
        embedded.redis_url(path)
        yield path
        stop_servers(path)
        assert processes_under(path) == []


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_a_command_without_database_url_fails_in_one_line_and_starts_nothing(
    scratch: Path, verb: list[str]
) -> None:
    # Given nothing configured, no embedded flag and an empty data dir
    data = scratch / "data"
    # When an operator runs the command
    out = run(cli(*verb), bare_env(data), timeout=60)
    # Then it exits 2 with one line naming DATABASE_URL and the way to the embedded servers
    assert out.returncode == 2, out.stdout + out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("chip-orchestrator: DATABASE_URL is not set"), line
    assert "ORCHESTRATOR_EMBEDDED=1" in line
    assert out.stdout == ""
    # And it started nothing: no server process, not even a data dir
    assert not data.exists()
    assert processes_under(scratch) == []


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_celery_without_urls_fails_in_one_line_and_starts_nothing(
    scratch: Path, command: str
) -> None:
    # Given nothing configured and no embedded flag
    data = scratch / "data"
    # When `celery -A tasks worker|beat` starts
    argv = [sys.executable, "-m", "celery", "-A", "tasks", command, "-l", "INFO"]
    out = run(argv, bare_env(data), timeout=60)
    # Then it exits non-zero at once with one line naming both URLs
    assert out.returncode != 0
    [line] = out.stderr.strip().splitlines()
    assert "DATABASE_URL and REDIS_URL are not set" in line, line
    assert "ORCHESTRATOR_EMBEDDED=1" in line
    # And nothing was started
    assert not data.exists()
    assert processes_under(scratch) == []


def test_the_embedded_flag_starts_real_servers_and_migrate_status_run_on_them(
    data_dir: Path,
) -> None:
    # Given servers started under the flag (the fixture migrated once)
    env = bare_env(data_dir, ORCHESTRATOR_EMBEDDED="1")
    # When migrate runs again and status asks for JSON
    again = run(cli("migrate"), env)
    status = run(cli("status", "--json"), env)
    # Then migrate changes nothing and status reads the empty pool from the real server
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stdout
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["saude"] == "critico" and data["producao"]["count"] == 0
    assert (data_dir / "postgres" / "PG_VERSION").exists()


def test_a_shell_beside_a_running_demo_uses_its_servers_without_the_flag(data_dir: Path) -> None:
    # Given embedded servers left running under the data dir (as `make run` leaves them)
    pids = (embedded.postgres_pid(data_dir), embedded.redis_pid(data_dir))
    assert None not in pids
    # When a command runs there with nothing configured and no flag
    status = run(cli("status", "--json"), bare_env(data_dir))
    # Then it works on those servers, and no other server was started
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["producao"]["count"] == 0
    assert (embedded.postgres_pid(data_dir), embedded.redis_pid(data_dir)) == pids
    assert len([p for p in processes_under(data_dir) if "redis-server" in p]) == 1


def test_embedded_redis_is_found_again_by_a_second_process(data_dir: Path) -> None:
    url = embedded.redis_url(data_dir)
    assert embedded.redis_url(data_dir) == url
    assert embedded.running_redis_url(data_dir) == url


def child_pytest(data: Path) -> subprocess.CompletedProcess:
    """A test session on the embedded default (as `make test` runs it) against the data dir."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:tmpdir"]
    argv.append(str(Path(__file__).parent / "session_probe.py"))
    return run(argv, bare_env(data, ORCHESTRATOR_EMBEDDED="1"), timeout=180)


def test_a_test_session_stops_the_servers_it_started(scratch: Path) -> None:
    # Given an empty data dir
    data = scratch / "data"
    # When a test session on the embedded default runs there and ends
    out = child_pytest(data)
    # Then its tests ran on servers it started, and none of them is left running
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (data / "postgres" / "PG_VERSION").exists() and (data / "redis").exists()
    assert processes_under(scratch) == []


def test_a_test_session_leaves_a_running_demos_servers_alone(data_dir: Path) -> None:
    # Given embedded servers that were running before the session (a demo's)
    pids = (embedded.postgres_pid(data_dir), embedded.redis_pid(data_dir))
    # When a test session runs on them and ends
    out = child_pytest(data_dir)
    # Then they are still the same running servers
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (embedded.postgres_pid(data_dir), embedded.redis_pid(data_dir)) == pids
    assert None not in pids


def test_the_demo_needs_no_flag_and_stops_the_servers_it_started(scratch: Path) -> None:
    # Given nothing configured, no embedded flag, an empty data dir (`make run` on a fresh clone)
    data = scratch / "data"
    # When the demo runs for a few seconds
    argv = cli("demo", "--no-live", "--duration", "6", "--cycle-seconds", "2")
    out = run(argv, bare_env(data), timeout=180)
    # Then it ran on embedded servers it started, and stopped them (and its children) at the end
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "pool de demonstracao criado" in out.stdout
    assert "PostgreSQL embutido parado" in out.stdout
    assert processes_under(scratch) == []
