"""The command line run as a user runs it: a subprocess on the test database and Redis DB.

The worker fixtures are tests/worker's: one worker per module, stopped when the module ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from orchestrator.app.settings import ROOT
from tests.support.private_stack import broker_url_for, purge_queues
from tests.worker.conftest import (  # noqa: F401  (fixtures shared with tests/worker)
    QUEUES,
    celery_client,
    salvy,
    worker,
    worker_extra_env,
)

#: How a test runs the CLI: cli("status", "--json") -> CompletedProcess.
Cli = Callable[..., subprocess.CompletedProcess]


def cli_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """A user's shell: the test servers (and the test broker, if not that Redis), no secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SALVY_"))}
    env.pop("CELERY_BROKER_URL", None)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, PYTHONUNBUFFERED="1")
    if (broker := broker_url_for(redis_url)) != redis_url:
        env["CELERY_BROKER_URL"] = broker
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
def worker_concurrency() -> int:
    return 2


@pytest.fixture
def empty_queues(redis_url: str) -> Iterator[redis.Redis]:
    """Queues, locks and markers empty before and after the test (none leak into the next)."""
    client = redis.Redis.from_url(redis_url)

    def wipe() -> None:
        purge_queues(broker_url_for(redis_url), QUEUES.split(","))
        for key in client.scan_iter("chiporch:*"):
            if key != b"chiporch:test-claim":
                client.delete(key)

    wipe()
    yield client
    time.sleep(0.2)
    wipe()
    client.close()
