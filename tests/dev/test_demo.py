"""`chip-orchestrator demo` end to end: real worker, beat, Salvy stand-in and simulator processes."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
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
    assert "previsao: " in out.stdout and "recomendado warmup_buffer" in out.stdout
    assert "(configurado 4, 2;" in out.stdout
    # And the lead time it plans with is a warm-up's (the time-lapse ages each purchase with its
    # warm-up; the seeded chips were bought when they started warming), never ~0 days
    leads = [float(x) for x in re.findall(r"prazo ([0-9.e+-]+) d ->", out.stdout)]
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


#: A plain pool line: health, counts against their targets, the reserve against ready_min 2 +
#: warmup_buffer 4.
POOL_LINE = re.compile(
    r"^\d\d:\d\d:\d\d pool (saudavel|atencao|critico): producao \d+ \(min 6, max 8\),"
    r" ready \d+ \(min 2\), warming \d+ \+ \d+ em compra \(buffer 4\), reserva \d+/6, "
)


def read_lines(proc: subprocess.Popen) -> queue.Queue:
    """Each line of proc's stdout as it arrives (None at the end), read by a thread."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_a_piped_demo_prints_the_pools_health_every_cycle_and_stops_cleanly(
    clean_db: sa.Engine, demo_env: dict[str, str]
) -> None:
    # Given the demo started as `make run | tee demo.log` or CI starts it: without --no-live,
    # its output a pipe, not a terminal
    argv = [sys.executable, "-m", "orchestrator", "demo", "--cycle-seconds", "2"]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=demo_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines, seen, pool = read_lines(proc), [], []
    try:
        # When it has printed the pool five times (the bound only fails a stuck demo)
        deadline = time.monotonic() + 240
        while len(pool) < 5:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{len(pool)} pool lines after 240 s:\n" + "\n".join(seen[-40:]))
            assert line is not None, "\n".join(seen[-40:])
            seen.append(line)
            if re.match(r"\d\d:\d\d:\d\d pool ", line):
                pool.append(line)
        assert processes_marked(demo_env["CHIPORCH_DEMO_MARKER"])  # worker, beat, stand-in
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while (line := lines.get(timeout=10)) is not None:
        seen.append(line)
    out = "\n".join(seen)
    # Then it said it fell back to plain lines, and every pool line has health, counts and the
    # reserve against its target
    assert "saida nao e um terminal: linhas simples" in out
    assert all(POOL_LINE.match(line) for line in pool), pool
    # And Ctrl-C stopped it with exit 0, leaving no worker, beat or stand-in behind
    assert code == 0, out[-3000:]
    assert "demo encerrada" in out
    assert processes_marked(demo_env["CHIPORCH_DEMO_MARKER"]) == []
