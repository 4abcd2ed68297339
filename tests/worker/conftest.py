"""Real `celery -A tasks worker` processes on a real broker (no eager mode).

The broker is the module's Redis DB, or with CHIPORCH_TEST_BROKER=amqp a RabbitMQ vhost made for
it (tests/support/private_stack.py); results and locks are in Redis either way, as in production.
pytest-celery 1.x needs Docker, which these machines lack, and its fixtures shadow
celery.contrib.pytest's; so workers are plain subprocesses started the way ops start them
(orchestrator/dev/worker_process.py, which the benchmarks use too).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from orchestrator.app.settings import WORKER_QUEUES_ARG
from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.dev.worker_process import WorkerProcess
from orchestrator.dev.worker_process import running_worker as start_worker
from orchestrator.dev.worker_process import worker_env as base_worker_env
from tests.support.pg_waits import wait_for
from tests.support.private_stack import broker_url_for, celery_client_for, queue_depths

QUEUES = WORKER_QUEUES_ARG


def worker_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment a worker gets: the test database, Redis DB and its broker, nothing else."""
    broker = broker_url_for(redis_url)
    own_broker = {"CELERY_BROKER_URL": broker} if broker != redis_url else {}
    return base_worker_env(
        database_url, redis_url, ORCHESTRATOR_CYCLE_SECONDS="1", **{**own_broker, **extra}
    )


def log_file(log_dir: Path) -> Path:
    """A fresh log file for one worker under log_dir."""
    return log_dir / f"worker-{uuid.uuid4().hex[:6]}.log"


@contextlib.contextmanager
def running_worker(
    env: dict[str, str], log_dir: Path, client: Celery, concurrency: int = 4, queues: str = QUEUES
) -> Iterator[WorkerProcess]:
    """Start a worker, wait until it answers a ping, and always stop it afterwards."""
    log_path = log_file(log_dir)
    with start_worker(env, log_path, client, concurrency=concurrency, queues=queues) as proc:
        yield proc


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


def is_idle(client: Celery, names: list[str], broker_url: str) -> bool:
    """Nothing queued, and the named workers hold no task: running, reserved, or waiting for its
    ETA (a retry). A worker that does not answer in time counts as busy: on a loaded machine a
    reply can come later than the inspect timeout, and no reply is not "nothing to do"."""
    if sum(queue_depths(broker_url, QUEUES.split(",")).values()):
        return False
    inspect = client.control.inspect(destination=names, timeout=5)
    for held in (inspect.active(), inspect.reserved(), inspect.scheduled()):
        if held is None or set(held) != set(names) or any(held.values()):
            return False
    return True


def wait_idle(
    client: Celery,
    worker: WorkerProcess | dict[str, WorkerProcess],
    broker_url: str,
    timeout: float = 120,
) -> None:
    """Until is_idle for the worker (or each of a module's workers); fails after timeout."""
    names = [w.name for w in (worker.values() if isinstance(worker, dict) else [worker])]
    wait_for(lambda: is_idle(client, names, broker_url), timeout, every=0.1)


@pytest.fixture(autouse=True)
def _quiet_worker(worker: WorkerProcess, celery_client: Celery, broker_url: str) -> None:
    """Wait until the previous test's tasks are done, so they never touch this test's data."""
    wait_idle(celery_client, worker, broker_url)
