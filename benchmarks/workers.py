"""Real `celery -A tasks worker` subprocesses for the benchmarks, and their memory.

The worker itself is the tests' (orchestrator/dev/worker_process.py); a benchmark's logs to a
temporary file, removed when it stops, at WARNING.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from celery import Celery

from orchestrator.app.settings import WORKER_QUEUES_ARG
from orchestrator.dev.worker_process import WorkerProcess, worker_env

__all__ = [
    "QUEUES",
    "Worker",
    "client",
    "cpu_seconds",
    "rss_mib",
    "running_worker",
    "worker_env",
]

QUEUES = WORKER_QUEUES_ARG


class Worker(WorkerProcess):
    """One worker subprocess (prefork, -c concurrency), logging to a temporary file."""

    def __init__(
        self,
        env: dict[str, str],
        concurrency: int,
        extra: Sequence[str] = (),
        app: str = "tasks",
        queues: str = QUEUES,
    ) -> None:
        log_path = Path(tempfile.mkstemp(prefix="bench-worker-", suffix=".log")[1])
        super().__init__(
            env,
            log_path,
            concurrency=concurrency,
            queues=queues,
            app=app,
            loglevel="WARNING",
            extra_args=extra,
            prefix="bench",
        )

    def wait_ready(self, app: Celery, timeout: float = 60) -> None:
        """Block until the worker answers a ping (a loaded machine may take a minute)."""
        super().wait_ready(app, timeout)

    def rss_mib(self) -> list[float]:
        """Resident memory of each child, MiB."""
        return [rss_mib(pid) for pid in self.children()]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the main process and its children have used so far."""
        return sum(cpu_seconds(pid) for pid in [self.proc.pid, *self.children()])

    def stop(self, timeout: float = 30) -> None:
        """Warm shutdown (SIGTERM), then kill if it hangs; the log file goes."""
        super().stop(timeout=timeout)
        self.log_path.unlink(missing_ok=True)


def rss_mib(pid: int) -> float:
    """VmRSS of a process, MiB (0 if it is gone)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc/PID/stat, seconds (0 if it is gone)."""
    with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{pid}/stat") as f:
        # Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
        fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
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
