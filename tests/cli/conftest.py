"""The command line run as a user runs it: a subprocess on the test database and Redis DB.

The worker here is module-scoped (not tests/worker's session one), so it is gone before
tests/worker starts its own and the two never consume the same queues.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from celery import Celery

from orchestrator.salvy_standin import SalvyStandin
from orchestrator.settings import ROOT
from tests.worker.conftest import QUEUES, WorkerProcess, running_worker, worker_env

#: How a test runs the CLI: cli("status", "--json") -> CompletedProcess.
Cli = Callable[..., subprocess.CompletedProcess]


def cli_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """A user's shell: DATABASE_URL/REDIS_URL set to the test servers, no secrets or brokers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SALVY_"))}
    env.pop("CELERY_BROKER_URL", None)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@pytest.fixture
def cli(database_url: str, redis_url: str) -> Cli:
    """Run `python -m orchestrator ARGS` (== chip-orchestrator) and capture its output."""

    def run(*args: str, timeout: float = 60, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=ROOT,
            env=cli_env(database_url, redis_url, **extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="module")
def salvy() -> Iterator[SalvyStandin]:
    with SalvyStandin() as standin:
        yield standin


@pytest.fixture(scope="module")
def celery_client(redis_url: str) -> Iterator[Celery]:
    app = Celery("cli-test-client", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
    yield app
    app.close()


@pytest.fixture(scope="module")
def worker(
    database_url: str,
    redis_url: str,
    salvy: SalvyStandin,
    celery_client: Celery,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """A real `celery -A tasks worker` on the test database, Redis DB and Salvy stand-in."""
    env = worker_env(
        database_url, redis_url, SALVY_API_URL=salvy.url, SALVY_API_TOKEN="salvy_test_cli"
    )
    with running_worker(
        env, tmp_path_factory.mktemp("cli-workers"), celery_client, concurrency=2
    ) as proc:
        yield proc


@pytest.fixture
def empty_queues(redis_url: str) -> Iterator[redis.Redis]:
    """Queues, locks and markers empty before and after the test (none leak into the next)."""
    client = redis.Redis.from_url(redis_url)

    def wipe() -> None:
        for queue in QUEUES.split(","):
            client.delete(queue)
        for key in client.scan_iter("chiporch:*"):
            if key != b"chiporch:test-claim":
                client.delete(key)

    wipe()
    yield client
    time.sleep(0.2)
    wipe()
    client.close()
