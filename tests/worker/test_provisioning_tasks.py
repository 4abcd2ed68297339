"""Buying and releasing numbers through real workers, against the Salvy stand-in over HTTP.

The module runs its own worker on a broker of its own, with a 2 s Salvy read timeout (so a
purchase that hangs times out fast), ORCHESTRATOR_DDD_FALLBACK=21,31 and a 2 s settle time (the
stand-in lists a number as soon as it is sold).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from orchestrator.adapters.salvy import SalvyClient
from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.services.intent import ensure_intent, intent_name
from orchestrator.store.schema import chips, operations, outbox
from tests.factories import chip_row, make_chip, set_config
from tests.support.pg_waits import wait_for
from tests.support.private_stack import base_redis_url, claim_redis_db
from tests.support.purchases import claimed_and_given_up
from tests.worker.conftest import WorkerProcess

pytestmark = pytest.mark.worker

SALVY_TOKEN = "salvy_test_do_not_log_me"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with claim_redis_db(base_redis_url()) as url:
        yield url


@pytest.fixture(scope="module")
def worker_extra_env() -> dict[str, str]:
    return {
        "SALVY_API_TOKEN": SALVY_TOKEN,
        "SALVY_READ_TIMEOUT_SECONDS": "2",
        "ORCHESTRATOR_DDD_FALLBACK": "21,31",
        "ORCHESTRATOR_PURCHASE_SETTLE_SECONDS": "2",  # Salvy's list is up to date at once here
    }


@pytest.fixture(autouse=True)
def _fresh_salvy(_quiet_worker: None, salvy: SalvyStandin) -> None:
    """Once the previous test's tasks are done: no numbers at Salvy, every switch off."""
    salvy.reset()


@pytest.fixture
def direct(salvy: SalvyStandin) -> Iterator[SalvyClient]:
    """The test's own client of the stand-in (to set up numbers Salvy already holds)."""
    client = SalvyClient(salvy.url, "salvy_test_setup")
    yield client
    client.close()


def count(engine: sa.Engine, table: sa.Table, *where: sa.ColumnElement) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(table).where(*where)
        ).scalar_one()


def retries_logged(worker: WorkerProcess, task_id: str) -> int:
    return len(re.findall(rf"\[{task_id}\] retry", worker.log_path.read_text()))


def run(celery_client: Celery, name: str, *args: object, timeout: float = 60) -> dict:
    return celery_client.send_task(name, args=list(args)).get(timeout=timeout)


def expired_intent(engine: sa.Engine, *, claimed: bool = False) -> dict:
    """An intent past its deadline; claimed: a run took it (and called Salvy) before."""
    name = intent_name(str(uuid.uuid4()))
    intent = ensure_intent(engine, name, 11, 15)
    if claimed:
        claimed_and_given_up(engine, intent["id"])
    with engine.begin() as conn:
        conn.execute(
            sa.update(chips)
            .where(chips.c.id == intent["id"])
            .values(provisioning_deadline=sa.func.now() - sa.text("interval '1 minute'"))
        )
    return dict(intent)


# -- buying exactly once -------------------------------------------------------------------------


def test_salvy_timing_out_after_the_purchase_makes_the_task_retry_and_buy_exactly_once(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, salvy: SalvyStandin
) -> None:
    # Given Salvy sells the number but answers only after the worker's 2 s read timeout
    salvy.set_faults(timeout_after_purchase=1, hang_seconds=6)
    # When a provision_chip task runs
    result = celery_client.send_task("orchestrator.provision_chip")
    outcome = result.get(timeout=60)
    # Then the task retried and adopted that number: one number at Salvy, one warming chip
    assert outcome["status"] == "provisioned"
    assert retries_logged(worker, result.id) >= 1
    assert salvy.purchases == 1
    assert count(clean_db, chips) == count(clean_db, chips, chips.c.status == "warming") == 1
    assert chip_row(clean_db, outcome["chip_id"]).salvy_id == next(iter(salvy.numbers))
    # And the bearer token never reached the worker's log
    assert SALVY_TOKEN not in worker.log_path.read_text()


def test_a_purchase_task_delivered_twice_at_once_buys_once(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, salvy: SalvyStandin
) -> None:
    # Given Salvy takes 1.5 s to answer a purchase, and a provision_chip task is in that POST
    salvy.set_faults(post_delay=1.5)
    task_id = str(uuid.uuid4())
    celery_client.send_task("orchestrator.provision_chip", task_id=task_id)
    wait_for(lambda: salvy.posts == 1)
    # When the same message is delivered again meanwhile (as Redis does past the visibility
    # timeout, or a client sending twice)
    celery_client.send_task("orchestrator.provision_chip", task_id=task_id)
    # Then both deliveries end provisioned, and Salvy got one POST: the second only looked it up
    log = worker.log_path
    wait_for(lambda: len(re.findall(rf"\[{task_id}\] succeeded", log.read_text())) == 2)
    assert salvy.posts == salvy.purchases == 1
    assert count(clean_db, chips) == count(clean_db, chips, chips.c.status == "warming") == 1


def test_salvy_failing_twice_with_500_then_answering_buys_one_number(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, salvy: SalvyStandin
) -> None:
    # Given Salvy answers the next two requests with 500
    salvy.set_faults(fail_next=2)
    # When a provision_chip task runs
    result = celery_client.send_task("orchestrator.provision_chip")
    outcome = result.get(timeout=60)
    # Then it retried with backoff and bought exactly one number
    assert outcome["status"] == "provisioned"
    assert retries_logged(worker, result.id) == 2
    assert salvy.purchases == 1
    assert count(clean_db, chips, chips.c.status == "warming") == 1


def test_an_out_of_stock_ddd_is_bought_in_the_configured_fallback_ddd(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, salvy: SalvyStandin
) -> None:
    # Given the default DDD 11 is sold out (the worker's fallback list is 21,31)
    salvy.set_faults(out_of_stock=[11])
    # When a number is provisioned
    outcome = run(celery_client, "orchestrator.provision_chip")
    # Then it is bought in 21, recorded as such on the chip and the operation
    assert (outcome["status"], outcome["ddd"], outcome["ddd_solicitado"]) == ("provisioned", 21, 11)
    assert chip_row(clean_db, outcome["chip_id"]).ddd == 21
    with clean_db.connect() as conn:
        meta = conn.execute(sa.select(operations.c.metadata)).scalar_one()
    assert (meta["ddd"], meta["ddd_solicitado"]) == (21, 11)


def test_every_ddd_out_of_stock_is_rejected_buys_nothing_and_alerts(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, salvy: SalvyStandin
) -> None:
    # Given the default DDD and every fallback DDD are sold out
    salvy.set_faults(out_of_stock=[11, 21, 31])
    # When a number is provisioned
    outcome = run(celery_client, "orchestrator.provision_chip")
    # Then the task is rejected, nothing is bought, the intent dropped and ops alerted
    assert (outcome["status"], outcome["code"]) == ("rejected", "out_of_stock")
    assert salvy.purchases == 0
    assert count(clean_db, chips) == 0
    assert count(clean_db, operations, operations.c.sucesso.is_(False)) == 1
    assert count(clean_db, outbox, outbox.c.canal == "alertas") == 1


def test_cycles_with_a_slow_salvy_never_buy_more_than_the_deficit(
    clean_db: sa.Engine,
    worker: WorkerProcess,
    celery_client: Celery,
    salvy: SalvyStandin,
    redis_client: redis.Redis,
) -> None:
    # Given an empty warming buffer of 3, at most 2 purchases per cycle, and a slow Salvy
    set_config(clean_db, warmup_buffer=3, max_provisions_per_cycle=2, producao_min=0, ready_min=0)
    salvy.set_faults(latency=0.7)
    # When six cycles run while the purchases are still in flight
    dispatched, in_flight_seen = 0, 0
    for _ in range(6):
        result = run(celery_client, "orchestrator.run_cycle", timeout=30)
        dispatched += result["dispatched"]["provision_chip"]
        in_flight_seen = max(
            in_flight_seen, count(clean_db, chips, chips.c.status == "provisioning")
        )
        time.sleep(0.3)
    wait_for(lambda: count(clean_db, chips, chips.c.status == "provisioning") == 0)
    # Then the cycles saw purchases in flight, and bought exactly the deficit
    assert in_flight_seen >= 2
    assert dispatched == 3
    assert salvy.purchases == 3
    assert count(clean_db, chips, chips.c.status == "warming") == 3


# -- reconciliation ------------------------------------------------------------------------------


def test_reconcile_adopts_a_stuck_purchase_salvy_has_and_fails_one_it_never_saw(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, direct: SalvyClient
) -> None:
    # Given two purchases past their deadline that runs took: Salvy sold one of them, never
    # heard of the other
    found, lost = expired_intent(clean_db, claimed=True), expired_intent(clean_db, claimed=True)
    number = direct.create(11, found["provisioning_name"])
    # When orchestrator.reconcile_provisioning runs
    outcome = run(celery_client, "orchestrator.reconcile_provisioning")
    # Then the sold number is adopted as warming, the other intent failed and alerted
    assert (outcome["adopted"], outcome["failed"], outcome["unknown"]) == (1, 1, 0)
    assert outcome["expired_unclaimed"] == 0
    adopted = chip_row(clean_db, found["id"])
    assert (adopted.status, adopted.salvy_id) == ("warming", number.id)
    assert count(clean_db, chips, chips.c.id == lost["id"]) == 0  # dropped, not piled up
    failed_op = (
        operations.c.metadata["intencao"].astext == lost["id"],
        operations.c.operacao == "auto_provision",
    )
    assert count(clean_db, operations, *failed_op, operations.c.sucesso.is_(False)) == 1
    assert count(clean_db, outbox, outbox.c.canal == "alertas") == 1


def test_numbers_with_no_chip_are_alerted_once_and_never_cancelled(
    clean_db: sa.Engine,
    worker: WorkerProcess,
    celery_client: Celery,
    salvy: SalvyStandin,
    direct: SalvyClient,
) -> None:
    # Given two numbers at Salvy that no chip holds
    direct.create(11, "comprado-a-mao")
    direct.create(21, None)
    # When reconciliation runs twice
    first = run(celery_client, "orchestrator.reconcile_provisioning")
    second = run(celery_client, "orchestrator.reconcile_provisioning")
    # Then both runs see them, ops get one alert, and nothing is cancelled at Salvy
    assert first["unknown"] == second["unknown"] == 2
    assert count(clean_db, outbox, outbox.c.canal == "alertas") == 1
    assert salvy.cancellations == []


# -- cancel --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"), [("banned", "whatsapp-ban"), ("degraded", "unnecessary")]
)
def test_cancel_chip_releases_the_number_with_the_reason_for_its_state(
    clean_db: sa.Engine,
    worker: WorkerProcess,
    celery_client: Celery,
    salvy: SalvyStandin,
    direct: SalvyClient,
    status: str,
    reason: str,
) -> None:
    # Given a chip in that state holding a Salvy number
    number = direct.create(11, "x")
    chip = make_chip(clean_db, status, salvy_id=number.id, telefone=number.phone_number)
    # When orchestrator.cancel_chip runs
    outcome = run(celery_client, "orchestrator.cancel_chip", chip)
    # Then Salvy got one DELETE with that reason and the chip is cancelled
    assert (outcome["status"], outcome["salvy_reason"]) == ("cancelled", reason)
    assert salvy.cancellations == [(number.id, reason)]
    assert chip_row(clean_db, chip).status == "cancelled"


def test_cancel_chip_on_an_active_chip_is_rejected_and_cancels_nothing(
    clean_db: sa.Engine,
    worker: WorkerProcess,
    celery_client: Celery,
    salvy: SalvyStandin,
    direct: SalvyClient,
) -> None:
    number = direct.create(11, "x")
    chip = make_chip(clean_db, "active", salvy_id=number.id, telefone=number.phone_number)
    outcome = run(celery_client, "orchestrator.cancel_chip", chip)
    assert (outcome["status"], outcome["code"]) == ("rejected", "wrong_state")
    assert salvy.cancellations == []
    assert chip_row(clean_db, chip).status == "active"


def test_cancelling_a_chip_twice_rejects_the_second_and_deletes_once(
    clean_db: sa.Engine,
    worker: WorkerProcess,
    celery_client: Celery,
    salvy: SalvyStandin,
    direct: SalvyClient,
) -> None:
    # Given a banned chip cancelled once
    number = direct.create(11, "x")
    chip = make_chip(clean_db, "banned", salvy_id=number.id, telefone=number.phone_number)
    assert run(celery_client, "orchestrator.cancel_chip", chip)["status"] == "cancelled"
    # When ops cancel it again
    again = run(celery_client, "orchestrator.cancel_chip", chip)
    # Then the second is rejected and Salvy saw one DELETE
    assert again["status"] == "rejected"
    assert salvy.cancellations == [(number.id, "whatsapp-ban")]
    assert count(clean_db, operations, operations.c.operacao == "cancel") == 1
