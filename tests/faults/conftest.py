"""Fault tests: real worker, beat, Redis and PostgreSQL processes that the tests kill and restart.

Every test starts its own workers (they are the thing being hurt), and every test ends by
asserting that the invariant checker finds nothing.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.dev.worker_process import LoggedProcess
from orchestrator.ops import checker
from tests.support.pg_waits import wait_for
from tests.support.private_stack import (
    base_redis_url,
    broker_under_test,
    broker_url_for,
    claim_redis_db,
    purge_queues,
)
from tests.worker.conftest import QUEUES, worker_env

__all__ = ["QUEUES", "worker_env"]


def assert_no_violations(engine: sa.Engine) -> None:
    """The checker's verdict, shown in full when it is not clean."""
    assert checker.find_violations(engine) == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proc(LoggedProcess):
    """A `celery -A tasks <worker|beat>` subprocess leading its own process group."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "tasks", *args]
        super().__init__(argv, env, log_path, new_session=True)

    def wait_ready(self, timeout: float = 40) -> Proc:
        """Wait for the worker's 'ready.' line."""
        wait_for(lambda: " ready." in self.log() or self.proc.poll() is not None, timeout)
        if self.proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{self.log()[-3000:]}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Signal the process and wait; SIGKILL its group if it does not go in time."""
        return super().stop(sig, timeout)


class Cluster:
    """Starts workers and beats for one test and stops every one of them afterwards."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def worker(
        self, env: dict[str, str], concurrency: int = 2, *extra: str, ready: bool = True
    ) -> Proc:
        name = f"fault-{uuid.uuid4().hex[:8]}@%h"
        args = ["worker", "-P", "prefork", "-c", str(concurrency), "-Q", QUEUES, "-n", name]
        args += ["--without-gossip", "--without-mingle", "-l", "INFO", *extra]
        proc = Proc(args, env, self.log_dir / f"worker-{uuid.uuid4().hex[:6]}.log")
        self.procs.append(proc)
        return proc.wait_ready() if ready else proc

    def beat(self, env: dict[str, str]) -> Proc:
        schedule = self.log_dir / f"beat-{uuid.uuid4().hex[:6]}"
        args = ["beat", "-l", "INFO", "--schedule", str(schedule)]
        proc = Proc(args, env, self.log_dir / f"{schedule.name}.log")
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop(timeout=15)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A broker of this module's own: no other test's worker may take (or refuse) its messages."""
    with claim_redis_db(base_redis_url()) as url:
        yield url


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str) -> Iterator[Cluster]:
    """Workers/beats of this test; afterwards they are stopped and the test's Redis DB emptied."""
    procs = Cluster(tmp_path)
    yield procs
    procs.stop_all()
    if (
        broker_under_test() == "amqp"
    ):  # messages a test left behind never reach the next one's workers
        purge_queues(broker_url_for(redis_url), QUEUES.split(","))
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("*"):
        if key != b"chiporch:test-claim":
            client.delete(key)
    client.close()


@pytest.fixture
def celery_client(redis_url: str) -> Iterator[Celery]:
    """A plain client, as another service has: only the broker (and results) URL."""
    app = Celery("fault-client", broker=broker_url_for(redis_url), backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
    yield app
    app.close()


@pytest.fixture(scope="session")
def salvy() -> Iterator[SalvyStandin]:
    with SalvyStandin() as standin:
        yield standin


@pytest.fixture
def env(database_url: str, redis_url: str, salvy: SalvyStandin) -> dict[str, str]:
    """The environment of this test's workers: test database, test Redis DB, the Salvy stand-in."""
    salvy.reset()
    return worker_env(
        database_url, redis_url, SALVY_API_URL=salvy.url, SALVY_API_TOKEN="salvy_test_secret"
    )


class RedisServer:
    """A private redis-server, restartable on its port, with its data in a tmp dir.

    redis-server cannot bind port 0, so a free port is tried and the server that answers there is
    taken only if it is the one started here; on the first start a taken port means another one.
    """

    def __init__(self, directory: Path, appendonly: bool = True) -> None:
        self.dir, self.port, self.appendonly = directory, free_port(), appendonly
        self.proc: subprocess.Popen | None = None
        self._started_once = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start it (again on the same port after a stop: that is what a restart means here)."""
        for _ in range(5):
            cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            cmd += ["--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.dir)]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(self._exited_or_serving, 30, 0.05)
            if self.proc.poll() is None:
                self._started_once = True
                return self
            if self._started_once:
                raise RuntimeError(f"redis-server could not bind port {self.port} again")
            self.port = free_port()
        raise RuntimeError("redis-server found no port to bind")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis flushes the AOF and exits
            self.proc.wait(10)

    def _exited_or_serving(self) -> bool:
        assert self.proc is not None
        return self.proc.poll() is not None or self._serving_pid() == self.proc.pid

    def _serving_pid(self) -> int | None:
        """The pid of the Redis answering on self.port (None if nothing does)."""
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=1)
        try:
            return int(client.info("server")["process_id"])
        except redis.RedisError:
            return None
        finally:
            client.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test alone (never the machine's shared one), AOF on like production."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
