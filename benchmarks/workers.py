"""Real `celery -A tasks worker` subprocesses for the benchmarks, and their memory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from celery import Celery

from orchestrator.settings import ROOT, WORKER_QUEUES_ARG

QUEUES = WORKER_QUEUES_ARG


def worker_env(database_url: str, redis_url: str) -> dict[str, str]:
    """The scratch database and Redis DB; no Slack or Salvy (notifications go to the log)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SALVY_"))}
    env.pop("CELERY_BROKER_URL", None)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, PYTHONUNBUFFERED="1")
    return env


class Worker:
    """One worker subprocess (prefork, -c concurrency), logging to a temporary file."""

    def __init__(
        self,
        env: dict[str, str],
        concurrency: int,
        extra: Sequence[str] = (),
        app: str = "tasks",
        queues: str = QUEUES,
    ) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix="bench-worker-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-P", "prefork"]
        self.name = f"bench-{os.getpid()}-{queues.split(',')[0]}@{socket.gethostname()}"
        cmd += ["-c", str(concurrency), "-Q", queues, "-n", self.name]
        cmd += ["--without-gossip", "--without-mingle", "-l", "WARNING", *extra]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, app: Celery, timeout: float = 60) -> None:
        """Block until the worker answers a ping."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-2000:]}")
            if app.control.ping(destination=[self.name], timeout=0.5):
                return
        raise RuntimeError(f"worker not ready: {self.log_path.read_text()[-2000:]}")

    def children(self) -> list[int]:
        """Pids of the prefork children."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def rss_mib(self) -> list[float]:
        """Resident memory of each child, MiB."""
        return [rss_mib(pid) for pid in self.children()]

    def stop(self, timeout: float = 30) -> None:
        """Warm shutdown (SIGTERM), then kill if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.log_path.unlink(missing_ok=True)


def rss_mib(pid: int) -> float:
    """VmRSS of a process, MiB (0 if it is gone)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def client(redis_url: str) -> Celery:
    """A plain Celery client, as another service has: the broker and result URLs only."""
    app = Celery("bench-client", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
    return app


@contextlib.contextmanager
def running_worker(
    database_url: str,
    redis_url: str,
    app: Celery,
    concurrency: int,
    extra: Sequence[str] = (),
    worker_app: str = "tasks",
    queues: str = QUEUES,
) -> Iterator[Worker]:
    """A ready worker, stopped on exit."""
    worker = Worker(worker_env(database_url, redis_url), concurrency, extra, worker_app, queues)
    try:
        worker.wait_ready(app)
        yield worker
    finally:
        worker.stop()
