"""Real subprocesses for the tests and the benchmarks: a `celery -A tasks worker` started as ops
start one, and the log-file-and-stop plumbing every such process shares.

Never the production processes (compose and ops run celery themselves). A worker gets a name of
its own, so waiting for it pings that worker and no other; output goes to a log file, for
post-mortems.
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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from celery import Celery

from orchestrator.app.settings import ROOT, WORKER_QUEUES_ARG


def worker_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """This environment less Slack, Salvy and a broker override, on the given database and Redis.

    Notifications then go to the log, nothing talks to a real provider, and the broker is the
    Redis of redis_url unless `extra` names CELERY_BROKER_URL.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SALVY_"))}
    env.pop("CELERY_BROKER_URL", None)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, PYTHONUNBUFFERED="1", **extra)
    return env


class LoggedProcess:
    """A subprocess run from the repository root, its output appended to log_path.

    new_session: it leads a process group of its own, and a stop that times out kills the
    group (a worker's prefork children too); else only the process is killed.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        new_session: bool = False,
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self._group = new_session
        self.proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )

    def log(self) -> str:
        """Everything it printed so far."""
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        """Pids of its child processes (a worker's prefork pool)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        """Send sig (a warm shutdown by default), kill it if it does not exit in time; its code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if self._group:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                else:
                    self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class WorkerProcess(LoggedProcess):
    """One worker subprocess (prefork by default) on the given queues."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        concurrency: int = 4,
        queues: str = WORKER_QUEUES_ARG,
        pool: str = "prefork",
        app: str = "tasks",
        loglevel: str = "INFO",
        extra_args: Sequence[str] = (),
        prefix: str = "test",
    ) -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-P", pool]
        cmd += ["-c", str(concurrency), "-Q", queues, "-n", self.name]
        cmd += ["--without-gossip", "--without-mingle", "-l", loglevel, *extra_args]
        super().__init__(cmd, env, log_path)

    def wait_ready(self, app: Celery, timeout: float = 30) -> None:
        """Wait until this worker (not just any) answers a ping; RuntimeError with its log if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if app.control.ping(destination=[self.name], timeout=0.5):
                return
        raise RuntimeError(f"worker not ready: {self.log_path.read_text()[-3000:]}")


@contextlib.contextmanager
def running_worker(
    env: Mapping[str, str],
    log_path: Path,
    client: Celery,
    *,
    ready_timeout: float = 30,
    **options: object,
) -> Iterator[WorkerProcess]:
    """Start a worker (options: WorkerProcess's), wait until it answers, always stop it after."""
    proc = WorkerProcess(env, log_path, **options)  # type: ignore[arg-type]
    try:
        proc.wait_ready(client, timeout=ready_timeout)
        yield proc
    finally:
        proc.stop()
