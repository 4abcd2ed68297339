"""A second shell beside `make run`: it finds the demo's Salvy stand-in as it finds its database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.app.settings import ROOT
from tests.embedded.test_embedded_default import bare_env, cli, processes_under, run, stop_servers
from tests.support import servers

pytestmark = pytest.mark.embedded

#: Where the demo publishes its stand-in (URL, token, pid) under the data dir.
PUBLISHED = "salvy_standin.json"


@pytest.fixture
def scratch() -> Iterator[Path]:
    """Under .data/tests/ (servers.scratch_dir), never pytest's tmp root."""
    with servers.scratch_dir("beside") as path:
        yield path
        stop_servers(path / "data")  # only if a failed test left them: the demo stops its own


def wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def test_status_and_plan_beside_a_running_demo_see_its_salvy_stand_in(scratch: Path) -> None:
    # Given `make run` on a fresh clone: nothing configured, embedded servers under .data/
    data, log = scratch / "data", scratch / "demo.out"
    with log.open("w") as sink:
        demo = subprocess.Popen(
            cli("demo", "--no-live", "--cycle-seconds", "2"),
            cwd=ROOT,
            env=bare_env(data),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(log, "iniciados", demo)
        # When status and plan run in a second shell, with nothing configured either
        status = run(cli("status", "--json"), bare_env(data))
        plan = run(cli("plan", "--json"), bare_env(data))
        # Then both buy from the demo's stand-in: purchases are on, not "no SALVY_API_URL"
        assert status.returncode == 0, status.stderr
        assert plan.returncode == 0, plan.stderr
        compras = json.loads(status.stdout)["compras"]
        assert compras["estado"] == "ativas", compras
        assert json.loads(plan.stdout)["status"]["compras"]["estado"] == "ativas"
        assert (data / PUBLISHED).exists()
        # And when the demo is stopped
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(timeout=120)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    # Then it exited 0, withdrew its stand-in, and left nothing running
    assert code == 0, log.read_text()[-3000:]
    assert not (data / PUBLISHED).exists()
    assert processes_under(scratch) == []
