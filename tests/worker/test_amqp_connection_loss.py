"""RabbitMQ: a worker that loses its connection mid-task never runs the task beside its redelivery.

RabbitMQ requeues an unacknowledged delivery as soon as the connection that held it closes. With
`worker_cancel_long_running_tasks_on_connection_loss=False` (right for Redis) the first run goes on
while the redelivery starts, with the same task id, and the chip lock owned by that id lets both
in. celeryconfig sets it to True on AMQP: the worker kills the cut-off run, and the redelivery is
the only one. This module always runs on a RabbitMQ vhost of its own, whatever the test broker.
"""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest
import sqlalchemy as sa
from celery import Celery

from orchestrator.store.schema import chips, operations
from tests.factories import chip_row, make_chip
from tests.support.pg_waits import wait_until as wait_for
from tests.support.private_stack import (
    base_redis_url,
    claim_redis_db,
    create_vhost,
    delete_vhost,
    rabbitmqctl,
)
from tests.worker.conftest import WorkerProcess

pytestmark = [pytest.mark.worker, pytest.mark.amqp]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with claim_redis_db(base_redis_url()) as url:
        yield url


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """A RabbitMQ vhost for this module alone, even when the test broker is Redis."""
    url = create_vhost()
    yield url
    delete_vhost(url)


@pytest.fixture(scope="module")
def celery_client(broker_url: str, redis_url: str) -> Iterator[Celery]:
    app = Celery("amqp-client", broker=broker_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
    yield app
    app.close()


@pytest.fixture(scope="module")
def worker_extra_env(broker_url: str) -> dict[str, str]:
    return {"CELERY_BROKER_URL": broker_url}


@pytest.fixture(scope="module")
def worker_concurrency() -> int:
    return 2  # room for the first run and its redelivery at once


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def running_pids(client: Celery, task_id: str) -> set[int]:
    """Pool processes that are alive and running this task id, as the workers report them."""
    # A connection of its own each time: the test closes every connection of the vhost.
    with client.connection_for_write() as conn:
        active = client.control.inspect(timeout=1, connection=conn).active() or {}
    pids = {r["worker_pid"] for reqs in active.values() for r in reqs if r["id"] == task_id}
    return {pid for pid in pids if alive(pid)}


def blocked_by(conn: sa.Connection) -> int:
    """Backends waiting for a lock this connection holds."""
    return conn.execute(
        sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
        )
    ).scalar_one()


def test_a_lost_broker_connection_never_leaves_a_task_running_beside_its_redelivery(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, broker_url: str
) -> None:
    # Given a replace_chip paused inside its transaction on the chip's row, which the test holds
    old = make_chip(clean_db, "active", trust=10)
    ready = make_chip(clean_db, "ready", trust=95)
    holder = clean_db.connect()
    holder.execute(sa.select(chips.c.id).where(chips.c.id == old).with_for_update())
    result = celery_client.send_task("orchestrator.replace_chip", args=[old])
    wait_for(lambda: blocked_by(holder) == 1)
    (first,) = wait_for(lambda: running_pids(celery_client, result.id))
    # When RabbitMQ closes the worker's connection (the broker requeues the unacked delivery)
    vhost = broker_url.rsplit("/", 1)[1]
    rabbitmqctl("close_all_connections", "--vhost", vhost, "test: connection lost")
    # Then the redelivery starts, and it is the only live run of that task id
    redelivered = wait_for(lambda: running_pids(celery_client, result.id) - {first})
    wait_for(lambda: not alive(first), timeout=10)
    assert len(redelivered) == 1
    assert running_pids(celery_client, result.id) == redelivered
    # And once the row is free the chip is replaced once, by the redelivery
    holder.rollback()
    holder.close()
    outcome = result.get(timeout=60)
    assert (outcome["status"], outcome["replacement_id"]) == ("replaced", ready)
    assert chip_row(clean_db, old).status == "degraded"
    log = worker.log_path.read_text()
    assert log.count(f"orchestrator.replace_chip[{result.id}] received") == 2
    assert log.count(f"orchestrator.replace_chip[{result.id}] succeeded") == 1
    with clean_db.connect() as conn:
        ops = conn.execute(
            sa.select(sa.func.count()).where(operations.c.operacao == "auto_replace")
        ).scalar_one()
    assert ops == 1
