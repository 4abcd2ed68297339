"""Buying numbers: the purchase service on real PostgreSQL against the Salvy stand-in."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from orchestrator.adapters.salvy import SalvyClient
from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.errors import Rejected, TransientError
from orchestrator.services.intent import ensure_intent, intent_name
from orchestrator.services.purchase import provision
from orchestrator.store.schema import chips
from tests.factories import chip_row, set_config
from tests.support.pg_waits import wait_until
from tests.support.purchases import (
    backoff_rows,
    chips_in,
    claimed_and_given_up,
    expire_intent,
    key,
    messages_in,
    provision_ops,
    rows,
)

# -- buying ----------------------------------------------------------------------------------------


def test_a_purchase_becomes_a_warming_chip_with_its_salvy_number(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given an empty pool whose default DDD is 11
    # When one number is provisioned
    result = provision(clean_db, salvy, key())
    # Then Salvy sold one number, and the pool holds it as a warming chip
    assert result["status"] == "provisioned"
    assert standin.purchases == 1
    (number,) = standin.numbers.values()
    chip = chip_row(clean_db, result["chip_id"])
    assert (chip.status, chip.telefone, chip.salvy_id, chip.ddd) == (
        "warming",
        number["phoneNumber"],
        number["id"],
        11,
    )
    assert chip.warming_started_at is not None and chip.provisioning_deadline is None
    assert number["name"] == chip.provisioning_name
    # And the purchase is logged and announced in operacoes
    (op,) = provision_ops(clean_db)
    assert op.sucesso and op.metadata["salvy_id"] == number["id"]
    assert len(messages_in(clean_db, "operacoes")) == 1


def test_a_retry_after_salvy_timed_out_adopts_the_number_instead_of_buying_again(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given Salvy sells the number but answers after the client gave up
    standin.set_faults(timeout_after_purchase=1, hang_seconds=3)
    purchase = key()
    with pytest.raises(TransientError):
        provision(clean_db, salvy, purchase)
    assert standin.purchases == 1
    # When the task retries with the same key
    result = provision(clean_db, salvy, purchase)
    # Then the number already bought is adopted: one number, one warming chip
    assert result["status"] == "provisioned"
    assert standin.purchases == 1
    assert len(chips_in(clean_db, "warming")) == 1
    assert len(provision_ops(clean_db)) == 1


def test_a_redelivered_purchase_that_already_completed_buys_nothing(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given a purchase that completed
    purchase = key()
    first = provision(clean_db, salvy, purchase)
    # When the same task is delivered again
    again = provision(clean_db, salvy, purchase)
    # Then it reports the same chip and Salvy sold one number
    assert again == {**again, "status": "provisioned", "chip_id": first["chip_id"], "already": True}
    assert standin.purchases == 1


def test_an_intent_recorded_by_the_cycle_is_the_one_the_task_completes(
    clean_db: sa.Engine, salvy: SalvyClient
) -> None:
    # Given the cycle recorded the intent (DDD 21) before dispatching the task
    purchase = key()
    intent = ensure_intent(clean_db, intent_name(purchase), 21, 15)
    # When the task runs with no DDD of its own
    result = provision(clean_db, salvy, purchase)
    # Then it completes that very intent in the DDD it recorded
    assert result["chip_id"] == intent["id"]
    assert chip_row(clean_db, intent["id"]).ddd == 21
    assert len(rows(clean_db, sa.select(chips))) == 1


# -- DDD fallback ------------------------------------------------------------------------------------


def test_an_out_of_stock_ddd_falls_back_along_the_list_and_records_the_ddd_used(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given DDDs 11 and 21 are sold out and the fallback list is 21, 31
    standin.set_faults(out_of_stock=[11, 21])
    # When a number is provisioned for the default DDD 11
    result = provision(clean_db, salvy, key(), fallback=(21, 31))
    # Then it is bought in 31, and 31 is recorded on the chip and the operation
    assert result["status"] == "provisioned"
    assert chip_row(clean_db, result["chip_id"]).ddd == 31
    assert next(iter(standin.numbers.values()))["phoneNumber"].startswith("+5531")
    (op,) = provision_ops(clean_db)
    assert (op.metadata["ddd"], op.metadata["ddd_solicitado"]) == (31, 11)
    (texto,) = messages_in(clean_db, "operacoes")
    assert "DDD 31" in texto and "DDD 11 sem estoque" in texto


def test_every_ddd_out_of_stock_buys_nothing_drops_the_intent_and_alerts(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given the default DDD and the whole fallback list are sold out
    standin.set_faults(out_of_stock=[11, 21])
    # When a number is provisioned
    purchase = key()
    result = provision(clean_db, salvy, purchase, fallback=(21,))
    # Then nothing is bought, the intent leaves no row behind, and purchases pause
    assert (result["status"], result["code"], result["cause"]) == (
        "rejected",
        "out_of_stock",
        "out_of_stock",
    )
    assert result["paused_until"] is not None
    assert standin.purchases == 0
    assert rows(clean_db, sa.select(chips)) == []
    # And the failure is logged (with the intent's name) and ops alerted
    (op,) = provision_ops(clean_db)
    assert op.sucesso is False and "estoque" in op.erro and op.chip_id is None
    assert op.metadata["name"] == intent_name(purchase)
    assert op.metadata["intencao"] == result["chip_id"]
    assert len(messages_in(clean_db, "alertas")) == 1


def test_a_bad_ddd_is_rejected_before_any_intent_is_recorded(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    with pytest.raises(Rejected):
        provision(clean_db, salvy, key(), ddd=7)
    assert rows(clean_db, sa.select(chips)) == [] and standin.purchases == 0


# -- never twice ---------------------------------------------------------------------------------------


def test_a_purchase_no_worker_took_before_its_deadline_is_not_made_nor_taken_for_a_failure(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given an intent recorded by the cycle whose deadline passed before any worker took it
    # (the I/O worker was down)
    purchase = key()
    name = intent_name(purchase)
    intent = ensure_intent(clean_db, name, 11, 15)
    expire_intent(clean_db, name)
    # When the task finally runs
    result = provision(clean_db, salvy, purchase)
    # Then nothing is bought (the cycle may already have bought its replacement), Salvy is not
    # even asked, and the intent is gone as expired, not failed
    assert (result["status"], result["cause"], result["chip_id"]) == (
        "expired",
        "nao_retirada",
        intent["id"],
    )
    assert standin.purchases == standin.posts == 0
    assert rows(clean_db, sa.select(chips)) == []
    (op,) = provision_ops(clean_db)
    assert (op.sucesso, op.motivo, op.metadata["name"]) == (False, "Compra nao iniciada", name)
    # And purchases are not paused: ops are told the purchases are not being picked up
    assert backoff_rows(clean_db) == []
    (alert,) = messages_in(clean_db, "alertas")
    assert "nao estao sendo retiradas da fila" in alert
    # And a redelivery of that task does not buy either
    again = provision(clean_db, salvy, purchase)
    assert (again["status"], again["already"]) == ("failed", True)
    assert standin.posts == 0 and len(provision_ops(clean_db)) == 1


def test_a_claimed_purchase_past_its_deadline_is_still_a_failed_purchase(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given an intent a run took (its call to Salvy failed) and whose deadline then passed
    purchase = key()
    name = intent_name(purchase)
    intent = ensure_intent(clean_db, name, 11, 15)
    claimed_and_given_up(clean_db, intent["id"])
    expire_intent(clean_db, name)
    # When the task's retry runs
    result = provision(clean_db, salvy, purchase)
    # Then it looked the name up, bought nothing, and the failure pauses purchases as before
    assert (result["status"], result["code"]) == ("rejected", "expired")
    assert standin.purchases == standin.posts == 0
    assert result["paused_until"] is not None and backoff_rows(clean_db)[0].failures == 1
    (alert,) = messages_in(clean_db, "alertas")
    assert "Compras na Salvy pausadas" in alert


def test_a_number_cancelled_at_salvy_under_the_intents_name_is_not_bought_again(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given Salvy sold a number under the intent's name and someone cancelled it there
    purchase = key()
    name = intent_name(purchase)
    ensure_intent(clean_db, name, 11, 15)
    number = salvy.create(11, name)
    salvy.cancel(number.id, "unnecessary")
    # When the task runs
    result = provision(clean_db, salvy, purchase)
    # Then it does not spend money a second time
    assert (result["status"], result["code"]) == ("rejected", "canceled")
    assert standin.purchases == 1


def test_one_purchase_delivered_twice_at_once_posts_once(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given Salvy takes a while to answer a purchase, and a first run is in the middle of one
    standin.set_faults(post_delay=1.5)
    purchase = key()
    patient = SalvyClient(standin.url, "salvy_test_key", read_timeout=10)
    first: list[dict] = []
    run = threading.Thread(target=lambda: first.append(provision(clean_db, patient, purchase)))
    run.start()
    wait_until(lambda: standin.posts == 1)
    # When the same task runs a second time meanwhile (Redis redelivered it, say)
    with pytest.raises(TransientError) as second:
        provision(clean_db, salvy, purchase)
    run.join(10)
    patient.close()
    # Then only the first run called POST; the second looked the name up and retries later
    assert standin.posts == standin.purchases == 1
    assert first[0]["status"] == "provisioned"
    assert (second.value.retry_after or 0) >= 30  # Salvy's list has had time to show it
    # And its retry finds the purchase done
    again = provision(clean_db, salvy, purchase)
    assert (again["status"], again["already"]) == ("provisioned", True)
    assert len(chips_in(clean_db, "warming")) == 1


def test_after_a_timeout_nobody_buys_again_before_salvy_could_list_the_number(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given Salvy answers a purchase (and lists its number) only after our client gave up
    standin.set_faults(post_delay=2.5)
    purchase = key()
    with pytest.raises(TransientError) as timed_out:
        provision(clean_db, salvy, purchase)
    # Then the retry is due only once Salvy had time to list the number
    assert (timed_out.value.retry_after or 0) >= 30
    # When the task is delivered again before that (the number is not listed yet)
    with pytest.raises(TransientError):
        provision(clean_db, salvy, purchase)
    # Then that run did not buy
    assert standin.posts == 1
    # When the wait is over (Salvy lists the number now) and the retry runs
    wait_until(lambda: standin.purchases == 1)
    with clean_db.begin() as conn:
        conn.execute(
            sa.update(chips)
            .where(chips.c.provisioning_name == intent_name(purchase))
            .values(provisioning_lease_until=sa.func.now() - timedelta(seconds=1))
        )
    result = provision(clean_db, salvy, purchase)
    # Then it adopts that number: one POST, one number, one warming chip
    assert result["status"] == "provisioned"
    assert standin.posts == standin.purchases == 1
    assert len(chips_in(clean_db, "warming")) == 1


def test_provisioning_respects_the_configured_default_ddd(
    clean_db: sa.Engine, salvy: SalvyClient
) -> None:
    set_config(clean_db, default_ddd=47)
    result = provision(clean_db, salvy, key())
    assert chip_row(clean_db, result["chip_id"]).ddd == 47
