"""Tasks executed by real prefork workers consuming a real broker (Redis, or RabbitMQ)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest
import sqlalchemy as sa
from celery import Celery

from orchestrator.adapters import locks
from orchestrator.store.schema import chips, conversation_chips, operations
from tests.factories import add_conversations, chip_row, make_chip, set_config
from tests.support.pg_waits import wait_for
from tests.worker.conftest import WorkerProcess, is_idle, wait_idle

pytestmark = pytest.mark.worker


def test_a_task_sent_by_name_from_another_process_is_executed(
    clean_db: sa.Engine, worker: WorkerProcess, broker_url: str
) -> None:
    # Given a banned chip with conversations and a ready chip
    old = make_chip(clean_db, "active", trust=90)
    add_conversations(clean_db, old, 5)
    ready = make_chip(clean_db, "ready", trust=95)
    # When another service, knowing only the broker URL, sends the task by name
    script = textwrap.dedent(
        f"""
        from celery import Celery
        Celery(broker={broker_url!r}).send_task(
            "orchestrator.replace_chip", args=[{old!r}], kwargs={{"reason": "banned"}})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    # Then the chip is swapped
    wait_for(lambda: chip_row(clean_db, ready).status == "active")
    assert chip_row(clean_db, old).status == "banned"
    with clean_db.connect() as conn:
        left = conn.execute(
            sa.select(sa.func.count()).where(
                conversation_chips.c.chip_id == old, conversation_chips.c.active
            )
        ).scalar_one()
    assert left == 0


@pytest.mark.parametrize("bad", ["not-a-uuid", str(uuid.uuid4()), 42, ["x"]])
def test_a_bad_chip_id_comes_back_rejected_and_changes_nothing(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, bad: object
) -> None:
    chip = make_chip(clean_db, "active", trust=10)
    make_chip(clean_db, "ready", trust=95)
    result = celery_client.send_task("orchestrator.replace_chip", args=[bad]).get(timeout=20)
    assert result["status"] == "rejected"
    assert result["reason"]
    assert chip_row(clean_db, chip).status == "active"
    with clean_db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(operations)).scalar_one() == 0


def test_wrong_argument_count_is_rejected_not_crashed(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery
) -> None:
    result = celery_client.send_task(
        "orchestrator.promote_ready_to_active", args=["a", "b", "c"]
    ).get(timeout=20)
    assert (result["status"], result["code"]) == ("rejected", "bad_arguments")


def test_fifty_concurrent_replacements_with_ten_ready_chips(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery
) -> None:
    # Given 50 degraded active chips with conversations and 10 ready chips
    set_config(clean_db, producao_min=50, producao_max=60)
    degraded = [make_chip(clean_db, "active", trust=20) for _ in range(50)]
    for chip in degraded:
        add_conversations(clean_db, chip, 3)
    ready = {make_chip(clean_db, "ready", trust=90 + i % 10) for i in range(10)}
    # When 50 replace tasks arrive at once on a 4-process prefork worker
    results = [celery_client.send_task("orchestrator.replace_chip", args=[c]) for c in degraded]
    outcomes = [r.get(timeout=60) for r in results]
    # Then exactly 10 replacements, each ready chip used once, and no conversation stranded
    replaced = [o for o in outcomes if o["status"] == "replaced"]
    assert len(replaced) == 10
    assert {o["replacement_id"] for o in replaced} == ready
    assert {o["status"] for o in outcomes} == {"replaced", "no_ready_chip"}
    with clean_db.connect() as conn:
        destinos = conn.execute(
            sa.select(operations.c.chip_destino_id, sa.func.count())
            .where(operations.c.operacao == "auto_replace")
            .group_by(operations.c.chip_destino_id)
        ).all()
        stranded = conn.execute(
            sa.select(sa.func.count())
            .select_from(conversation_chips.join(chips, chips.c.id == conversation_chips.c.chip_id))
            .where(conversation_chips.c.active, chips.c.status != "active")
        ).scalar_one()
    assert all(n == 1 for _, n in destinos) and len(destinos) == 10
    assert stranded == 0


def test_a_cycle_sent_while_one_runs_is_skipped_and_one_sent_right_after_plans(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery
) -> None:
    make_chip(clean_db, "active", trust=10)
    # Given a cycle is running (its guard held, here by the test's own connection)
    with clean_db.connect() as running:
        running.execute(sa.select(sa.func.pg_advisory_lock(locks.CYCLE_GUARD_KEY)))
        # When ops send orchestrator.run_cycle from Flower meanwhile
        during = celery_client.send_task("orchestrator.run_cycle").get(timeout=20)
        running.execute(sa.select(sa.func.pg_advisory_unlock(locks.CYCLE_GUARD_KEY)))
        running.commit()
    # Then it is skipped, saying why
    assert during == {"status": "skipped", "reason": "cycle in progress"}
    # And once no cycle runs, cycles sent one right after the other both plan
    for _ in range(2):
        assert celery_client.send_task("orchestrator.run_cycle").get(timeout=20)["status"] == (
            "planned"
        )


def test_a_cycle_converges_a_broken_pool_to_a_healthy_one(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, broker_url: str
) -> None:
    # Given a pool with a degraded chip, an eligible warming chip and too few warming chips
    set_config(clean_db, producao_min=3, producao_max=4, ready_min=1, warmup_buffer=2)
    low = make_chip(clean_db, "active", trust=30)
    add_conversations(clean_db, low, 4)
    make_chip(clean_db, "active")
    make_chip(clean_db, "active")
    spare = make_chip(clean_db, "ready", trust=96)
    eligible = make_chip(clean_db, "warming", trust=90)
    # When cycles run until nothing is left to do
    health = None
    for _ in range(8):
        result = celery_client.send_task("orchestrator.run_cycle").get(timeout=60)
        wait_idle(celery_client, worker, broker_url)  # the tasks it fanned out have run
        health = result.get("saude")
        if health == "saudavel" and sum(result["dispatched"].values()) == 0:
            break
    # Then the pool is healthy, the degraded chip replaced, the warming chip promoted
    assert health == "saudavel"
    assert chip_row(clean_db, low).status == "degraded"
    assert chip_row(clean_db, spare).status == "active"
    assert chip_row(clean_db, eligible).status in ("ready", "active")
    with clean_db.connect() as conn:
        warming = conn.execute(
            sa.select(sa.func.count()).where(chips.c.status == "warming")
        ).scalar_one()
        bought = conn.execute(
            sa.select(sa.func.count()).where(
                operations.c.operacao == "auto_provision", operations.c.sucesso
            )
        ).scalar_one()
    assert warming >= 2 and bought >= 2


def test_a_chip_locked_by_another_worker_is_skipped_not_awaited(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, redis_client
) -> None:
    from orchestrator.adapters.locks import LockSet

    chip = make_chip(clean_db, "active", trust=10)
    make_chip(clean_db, "ready", trust=95)
    with LockSet(redis_client) as held:
        assert held.acquire(chip)
        result = celery_client.send_task("orchestrator.replace_chip", args=[chip]).get(timeout=20)
    assert result["status"] == "skipped"
    assert chip_row(clean_db, chip).status == "active"
    # Once the lock is free, the same task goes through
    result = celery_client.send_task("orchestrator.replace_chip", args=[chip]).get(timeout=20)
    assert result["status"] == "replaced"


def test_a_worker_that_does_not_answer_is_busy_not_idle(
    worker: WorkerProcess, celery_client: Celery, broker_url: str
) -> None:
    # Given the module's worker, too slow to answer (stopped, as a starved process is)
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        # Then the tests waiting for it to finish its tasks do not take it for idle
        assert not is_idle(celery_client, [worker.name], broker_url)
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
    # And once it answers, it is idle
    wait_idle(celery_client, worker, broker_url)
