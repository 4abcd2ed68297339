"""`chip-orchestrator demo` end to end: real worker, beat, Salvy stand-in and simulator processes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from orchestrator.app.settings import ROOT
from orchestrator.ops import checker
from orchestrator.store.schema import chips, operations
from tests.ops.cli.conftest import cli_env

pytestmark = pytest.mark.worker

DEMO = [sys.executable, "-m", "orchestrator", "demo", "--no-live", "--cycle-seconds", "2"]


def processes_marked(marker: str) -> list[psutil.Process]:
    """Every live process whose environment carries this run's marker (children inherit it)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("CHIPORCH_DEMO_MARKER") == marker and proc.status() != "zombie":
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture
def demo_env(database_url: str, redis_url: str, tmp_path: Path, empty_queues) -> dict[str, str]:
    """The test database and Redis DB, .data/ in a temp dir, and a marker to find the children."""
    return cli_env(
        database_url,
        redis_url,
        ORCHESTRATOR_DATA_DIR=str(tmp_path),
        CHIPORCH_DEMO_MARKER=uuid.uuid4().hex,
    )


def wait_for_output(path: Path, text: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert proc.poll() is None, path.read_text()
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.2)


def test_the_demo_seeds_manages_the_pool_and_leaves_no_process_behind(
    clean_db: sa.Engine, demo_env: dict[str, str], tmp_path: Path
) -> None:
    # Given an empty database
    # When the demo runs for 20 seconds on it
    out = subprocess.run(
        [*DEMO, "--duration", "20"],
        cwd=ROOT,
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    # Then it exits 0 after seeding a pool and showing the simulator and the orchestrator at work
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "pool de demonstracao criado" in out.stdout
    assert "simulador: " in out.stdout and "operacao: " in out.stdout
    # And the forecast's recommendation against the configured buffer (the seed's 10 days of
    # history: 2 replacements, warmup_days as lead time -> warmup_buffer 5 at least)
    assert "forecast: " in out.stdout and "recommended warmup_buffer" in out.stdout
    assert "(configured 4, 2;" in out.stdout
    # And the lead time it plans with is a warm-up's (the time-lapse ages each purchase with its
    # warm-up; the seeded chips were bought when they started warming), never ~0 days
    leads = [float(x) for x in re.findall(r"lead ([0-9.e+-]+) d ->", out.stdout)]
    assert leads and min(leads) >= 21, leads
    # And every pool line shows the reserve against its target (ready_min 2 + warmup_buffer 4)
    pool_lines = [line for line in out.stdout.splitlines() if " pool " in line]
    assert pool_lines and all(re.search(r", reserva \d+/6, ", line) for line in pool_lines)
    # And the orchestrator changed the pool (operations beyond the seed's history)
    with clean_db.connect() as conn:
        done = conn.execute(
            sa.select(operations.c.operacao).where(
                sa.not_(operations.c.metadata.has_key("demo_seed"))
            )
        ).scalars()
        assert set(done) & {"auto_replace", "promotion_warming_ready", "auto_provision"}
    # And no worker, beat or stand-in process is left, and no invariant was broken
    assert processes_marked(demo_env["CHIPORCH_DEMO_MARKER"]) == []
    assert (tmp_path / "logs" / "worker.log").exists()
    assert checker.find_violations(clean_db) == []


def test_sigterm_stops_a_resumed_demo_cleanly_without_reseeding(
    clean_db: sa.Engine, demo_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a pool that already has chips
    seeded = subprocess.run(
        [*DEMO, "--duration", "1"], cwd=ROOT, env=demo_env, capture_output=True, timeout=120
    )
    assert seeded.returncode == 0, seeded.stdout[-2000:]
    with clean_db.connect() as conn:
        seeded_chips = conn.scalar(
            sa.select(sa.func.count()).where(chips.c.instance_name.like("demo-%"))
        )
    # When the demo runs again until it is sent SIGTERM
    log = tmp_path / "demo.out"
    with log.open("w") as sink:
        proc = subprocess.Popen(DEMO, cwd=ROOT, env=demo_env, stdout=sink, stderr=subprocess.STDOUT)
        wait_for_output(log, "iniciados", proc)
        assert len(processes_marked(demo_env["CHIPORCH_DEMO_MARKER"])) > 3  # demo, stand-in, ...
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    # Then it resumed the same pool, stopped with exit 0 and left nothing running
    assert code == 0, log.read_text()[-3000:]
    assert "pool existente retomado" in log.read_text()
    with clean_db.connect() as conn:
        assert (
            conn.scalar(sa.select(sa.func.count()).where(chips.c.instance_name.like("demo-%")))
            == seeded_chips
        )
    assert processes_marked(demo_env["CHIPORCH_DEMO_MARKER"]) == []
