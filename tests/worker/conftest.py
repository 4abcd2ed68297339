"""Real `celery -A tasks worker` processes on a real broker (no eager mode).

The broker is the module's Redis DB, or with CHIPORCH_TEST_BROKER=amqp a RabbitMQ vhost made for
it (tests/support/private_stack.py); results and locks are in Redis either way, as in production.
pytest-celery 1.x needs Docker, which these machines lack, and its fixtures shadow
celery.contrib.pytest's; so workers are plain subprocesses started the way ops start them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from orchestrator.app.settings import ROOT, WORKER_QUEUES_ARG
from orchestrator.dev.salvy_standin import SalvyStandin
from tests.support.private_stack import broker_url_for, celery_client_for, queue_depths

QUEUES = WORKER_QUEUES_ARG


def worker_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment a worker gets: the test database, Redis DB and its broker, nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SALVY_"))}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        ORCHESTRATOR_CYCLE_SECONDS="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("CELERY_BROKER_URL", None)
    broker = broker_url_for(redis_url)
    if broker != redis_url:
        env["CELERY_BROKER_URL"] = broker
    env.update(extra)
    return env


class WorkerProcess:
    """One `celery -A tasks worker` subprocess; its log goes to a file for post-mortems."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        concurrency: int = 4,
        pool: str = "prefork",
        queues: str = QUEUES,
    ) -> None:
        self.name = f"test-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        self.log_path = log_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("wb")
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks",
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-Q",
            queues,
            "-n",
            self.name,
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, app: Celery, timeout: float = 30) -> None:
        """Wait until this worker (not just any) answers a ping."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if app.control.ping(destination=[self.name], timeout=0.5):
                return
        raise RuntimeError(f"worker not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


@contextlib.contextmanager
def running_worker(
    env: dict[str, str], log_dir: Path, client: Celery, concurrency: int = 4, queues: str = QUEUES
) -> Iterator[WorkerProcess]:
    """Start a worker, wait until it answers a ping, and always stop it afterwards."""
    proc = WorkerProcess(env, log_dir, concurrency=concurrency, queues=queues)
    try:
        proc.wait_ready(client)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def salvy() -> Iterator[SalvyStandin]:
    with SalvyStandin() as standin:
        yield standin


@pytest.fixture(scope="module")
def broker_url(redis_url: str) -> str:
    """The module's broker: its Redis DB, or the RabbitMQ vhost made for it."""
    return broker_url_for(redis_url)


@pytest.fixture(scope="module")
def celery_client(redis_url: str) -> Iterator[Celery]:
    """A plain client, as another service has: only the broker (and results) URL."""
    app = celery_client_for(redis_url)
    yield app
    app.close()


@pytest.fixture(scope="module")
def worker_extra_env() -> dict[str, str]:
    """Environment a module adds to (or overrides in) its worker's; override it per module."""
    return {}


@pytest.fixture(scope="module")
def worker_concurrency() -> int:
    return 4


@pytest.fixture(scope="module")
def worker(
    database_url: str,
    redis_url: str,
    salvy: SalvyStandin,
    celery_client: Celery,
    worker_extra_env: dict[str, str],
    worker_concurrency: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """One real worker per module, on that module's broker: it never takes others' messages."""
    extra = {"SALVY_API_URL": salvy.url, "SALVY_API_TOKEN": "salvy_test_secret"}
    env = worker_env(database_url, redis_url, **{**extra, **worker_extra_env})
    log_dir = tmp_path_factory.mktemp("workers")
    with running_worker(env, log_dir, celery_client, concurrency=worker_concurrency) as proc:
        yield proc


@pytest.fixture(autouse=True)
def _quiet_worker(worker: WorkerProcess, celery_client: Celery, broker_url: str) -> None:
    """Wait until the previous test's tasks are done, so they never touch this test's data."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        queued = sum(queue_depths(broker_url, QUEUES.split(",")).values())
        active = celery_client.control.inspect(timeout=0.5).active() or {}
        reserved = celery_client.control.inspect(timeout=0.5).reserved() or {}
        busy = sum(len(v) for v in active.values()) + sum(len(v) for v in reserved.values())
        if queued == 0 and busy == 0:
            return
        time.sleep(0.1)
