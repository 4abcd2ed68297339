"""Reconciling purchases and reporting unknown numbers, on real PostgreSQL against the stand-in."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from orchestrator.adapters.salvy import SalvyClient
from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.services.cycle import pool_status
from orchestrator.services.intent import ensure_intent, intent_name
from orchestrator.services.purchase import provision
from orchestrator.services.reconcile import reconcile
from orchestrator.store.schema import alert_state, chips
from tests.factories import chip_row, make_chip
from tests.support.pg_waits import wait_until, waiting_backends
from tests.support.purchases import (
    backoff_rows,
    claimed_and_given_up,
    expire_intent,
    key,
    messages_in,
    provision_ops,
    rows,
)

# -- reconciliation ------------------------------------------------------------------------------------


def test_a_stuck_intent_salvy_has_is_adopted(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given an intent past its deadline whose purchase did happen at Salvy
    name = intent_name(key())
    intent = ensure_intent(clean_db, name, 11, 15)
    number = salvy.create(11, name)
    expire_intent(clean_db, name)
    # When the purchases are reconciled
    result = reconcile(clean_db, salvy)
    # Then the number is adopted as a warming chip, and not reported as unknown
    assert (result["adopted"], result["failed"], result["unknown"]) == (1, 0, 0)
    chip = chip_row(clean_db, intent["id"])
    assert (chip.status, chip.salvy_id) == ("warming", number.id)
    assert messages_in(clean_db, "alertas") == []


def test_a_stuck_intent_salvy_never_heard_of_is_failed_and_alerted(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given an intent a run took (and called Salvy for), past its deadline, that Salvy has no
    # number for
    name = intent_name(key())
    intent = ensure_intent(clean_db, name, 11, 15)
    claimed_and_given_up(clean_db, intent["id"])
    expire_intent(clean_db, name)
    # When the purchases are reconciled
    result = reconcile(clean_db, salvy)
    # Then the intent is failed (no longer counted in flight, no row left), logged and alerted
    assert (result["adopted"], result["failed"], result["expired_unclaimed"]) == (0, 1, 0)
    assert rows(clean_db, sa.select(chips).where(chips.c.id == intent["id"])) == []
    (op,) = provision_ops(clean_db)
    assert op.sucesso is False and op.metadata["intencao"] == intent["id"]
    assert op.metadata["causa"] == "other"
    (alert,) = messages_in(clean_db, "alertas")
    assert "Compras na Salvy pausadas" in alert
    assert backoff_rows(clean_db)[0].failures == 1
    assert standin.purchases == 0


def test_intents_no_worker_ever_took_expire_without_pausing_purchases_and_ops_hear_once(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given two intents the cycle recorded whose deadline passed before any worker took them
    # (the I/O worker was down: no lease was ever taken, Salvy was never called)
    names = [intent_name(key()) for _ in range(2)]
    intents = [ensure_intent(clean_db, name, 11, 15) for name in names]
    for name in names:
        expire_intent(clean_db, name)
    # When the purchases are reconciled (the worker is back)
    result = reconcile(clean_db, salvy)
    # Then both are expired, not failed: their rows are gone (no longer counted in flight) ...
    assert (result["adopted"], result["failed"], result["expired_unclaimed"]) == (0, 0, 2)
    assert rows(clean_db, sa.select(chips)) == []
    # ... each logged with a reason of its own, naming the queue rather than Salvy
    ops = provision_ops(clean_db)
    assert sorted(op.metadata["intencao"] for op in ops) == sorted(i["id"] for i in intents)
    assert {(op.sucesso, op.motivo, op.metadata["causa"]) for op in ops} == {
        (False, "Compra nao iniciada", "nao_retirada")
    }
    assert all("worker" in op.erro and "Salvy nao foi chamada" in op.erro for op in ops)
    # And purchases are not paused, and ops get one alert: purchases are not being picked up
    assert backoff_rows(clean_db) == []
    assert pool_status(clean_db)["compras"]["estado"] == "ativas"
    (alert,) = messages_in(clean_db, "alertas")
    assert "nao estao sendo retiradas da fila" in alert and "worker-io" in alert
    assert "Compras na Salvy pausadas" not in alert
    # And another such intent within the cool-down is dropped the same way, without a new alert
    late = intent_name(key())
    ensure_intent(clean_db, late, 11, 15)
    expire_intent(clean_db, late)
    assert reconcile(clean_db, salvy)["expired_unclaimed"] == 1
    assert len(messages_in(clean_db, "alertas")) == 1
    assert standin.posts == 0


def test_an_unclaimed_intent_a_run_claims_while_reconcile_waits_on_it_is_left_to_that_run(
    clean_db: sa.Engine, salvy: SalvyClient
) -> None:
    # Given an expired intent no run took yet, whose row the test holds locked
    name = intent_name(key())
    intent = ensure_intent(clean_db, name, 11, 15)
    expire_intent(clean_db, name)
    holder = clean_db.connect()
    holder.execute(sa.select(chips.c.id).where(chips.c.id == intent["id"]).with_for_update())
    outcome: list[dict] = []
    run = threading.Thread(target=lambda: outcome.append(reconcile(clean_db, salvy)))
    try:
        # When reconcile waits on that row, and a run's claim commits first (its lease taken)
        run.start()
        wait_until(lambda: waiting_backends(clean_db) == 1)
        holder.execute(
            sa.update(chips)
            .where(chips.c.id == intent["id"])
            .values(
                provisioning_lease_owner="late-run",
                provisioning_lease_until=sa.func.now() + sa.text("interval '2 minutes'"),
            )
        )
        holder.commit()
    finally:
        holder.close()
        run.join(30)
    # Then reconcile drops nothing: the intent is that run's, and nobody was told otherwise
    assert (outcome[0]["failed"], outcome[0]["expired_unclaimed"]) == (0, 0)
    assert chip_row(clean_db, intent["id"]).provisioning_lease_owner == "late-run"
    assert provision_ops(clean_db) == [] and messages_in(clean_db, "alertas") == []


def test_an_intent_not_yet_past_its_deadline_is_left_alone(
    clean_db: sa.Engine, salvy: SalvyClient
) -> None:
    intent = ensure_intent(clean_db, intent_name(key()), 11, 15)
    result = reconcile(clean_db, salvy)
    assert (result["adopted"], result["failed"]) == (0, 0)
    assert chip_row(clean_db, intent["id"]).status == "provisioning"


def test_a_purchase_that_lands_after_its_intent_failed_is_adopted_not_orphaned(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given an intent reconciled as failed (its row dropped) while its purchase was on its way
    name = intent_name(key())
    intent = ensure_intent(clean_db, name, 11, 15)
    claimed_and_given_up(clean_db, intent["id"])
    expire_intent(clean_db, name)
    reconcile(clean_db, salvy)
    assert rows(clean_db, sa.select(chips)) == []
    number = salvy.create(11, name)
    # When the next reconciliation runs
    result = reconcile(clean_db, salvy)
    # Then the paid-for number is adopted under its intent rather than left unused
    assert (result["adopted"], result["unknown"]) == (1, 0)
    chip = chip_row(clean_db, intent["id"])
    assert (chip.status, chip.salvy_id) == ("warming", number.id)
    successes = [op for op in provision_ops(clean_db) if op.sucesso]
    assert successes[0].metadata["adotado_apos_falha"] is True


# -- unknown numbers -------------------------------------------------------------------------------------


def test_numbers_salvy_bills_without_a_chip_are_alerted_once_and_never_cancelled(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given two numbers at Salvy that no chip holds, and one that a chip holds
    strays = [salvy.create(11, "bought-by-hand"), salvy.create(21, None)]
    ours = salvy.create(11, "ours")
    make_chip(clean_db, "active", salvy_id=ours.id, telefone=ours.phone_number)
    # When reconciliation runs twice
    first = reconcile(clean_db, salvy)
    second = reconcile(clean_db, salvy)
    # Then ops get one alert naming both strays, and nothing is cancelled at Salvy
    assert first["unknown"] == second["unknown"] == 2
    (alert,) = messages_in(clean_db, "alertas")
    assert all(n.phone_number[-4:] in alert.replace(" ", "").replace("-", "") for n in strays)
    assert standin.cancellations == []
    keys = {r.key for r in rows(clean_db, sa.select(alert_state.c.key))}
    assert keys == {f"salvy_unknown:{n.id}" for n in strays}


def test_a_number_being_bought_right_now_is_not_reported_as_unknown(
    clean_db: sa.Engine, salvy: SalvyClient
) -> None:
    # Given a purchase in flight whose number Salvy already lists
    name = intent_name(key())
    ensure_intent(clean_db, name, 11, 15)
    salvy.create(11, name)
    # When reconciliation runs before the deadline
    result = reconcile(clean_db, salvy)
    # Then it is not reported
    assert result["unknown"] == 0 and messages_in(clean_db, "alertas") == []


def test_a_second_number_under_a_completed_purchases_name_is_reported(
    clean_db: sa.Engine, salvy: SalvyClient
) -> None:
    # Given a completed purchase, and a second number Salvy sold under the same name
    purchase = key()
    provision(clean_db, salvy, purchase)
    salvy.create(11, intent_name(purchase))
    # When reconciliation runs
    # Then the double purchase is reported to ops
    assert reconcile(clean_db, salvy)["unknown"] == 1
