"""Webhook -> swap, end to end: the receiver process, a real worker, the Salvy stand-in.

Repeats and reordering are the normal case: six identical bans make one replacement; Salvy's
`blocked` is acted on only if Salvy still says so when re-read.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from celery import Celery

from orchestrator.dev.receiver_process import ReceiverProcess
from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.store.schema import conversation_chips, operations
from orchestrator.store.schema import outbox as notification_outbox
from tests.factories import add_conversations, chip_row, make_chip, set_config
from tests.support.pg_waits import wait_for
from tests.support.webhooks import close, envelope, opened, post_evolution, post_salvy
from tests.worker.conftest import (  # noqa: F401  (the worker group's fixtures)
    WorkerProcess,
    _quiet_worker,
    broker_url,
    celery_client,
    salvy,
    worker,
    worker_concurrency,
    worker_extra_env,
)

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module")
def receiver_extra_env(salvy: SalvyStandin) -> dict[str, str]:  # noqa: F811
    return {"SALVY_API_URL": salvy.url}


def _ops(engine: sa.Engine, chip_id: str, kind: str) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(operations).where(
                    operations.c.chip_id == chip_id, operations.c.operacao == kind
                )
            )
        )


def _open_on(engine: sa.Engine, chip_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(
                conversation_chips.c.chip_id == chip_id, conversation_chips.c.active
            )
        ).scalar_one()


@pytest.fixture
def pool(clean_db: sa.Engine) -> Iterator[tuple[str, str, str]]:
    """An active chip (instance name, 3 open conversations) and two fit ready chips."""
    name = f"inst-{datetime.now(UTC).timestamp():.6f}"
    chip = make_chip(clean_db, "active", instance_name=name, salvy_id=f"acc-{name}")
    add_conversations(clean_db, chip, 3)
    best = make_chip(clean_db, "ready", trust=99)
    make_chip(clean_db, "ready", trust=95)
    yield name, chip, best


def test_six_identical_ban_events_make_exactly_one_replacement(
    clean_db: sa.Engine,
    receiver: ReceiverProcess,
    worker: WorkerProcess,  # noqa: F811
    celery_client: Celery,  # noqa: F811
    pool: tuple[str, str, str],
) -> None:
    # Given an active chip with open conversations and ready chips
    name, chip, best = pool
    ban = close(name, 403)
    # When Evolution delivers the same ban six times
    answers = [post_evolution(receiver.url, ban) for _ in range(6)]
    # Then each is answered at once, and exactly one replacement happens
    assert {a.status_code for a in answers} == {200}
    assert answers[0].json()["replace"] == "banned"
    wait_for(lambda: chip_row(clean_db, best).status == "active")
    wait_for(lambda: _open_on(clean_db, chip) == 0)
    wait_for(lambda: _task_done(celery_client))
    assert len(_ops(clean_db, chip, "auto_replace")) == 1
    assert chip_row(clean_db, chip).status == "banned"
    assert chip_row(clean_db, chip).evolution_connected is False
    with clean_db.connect() as conn:
        active = conn.execute(
            sa.select(sa.func.count())
            .select_from(sa.table("chips"))
            .where(sa.text("status = 'active'"))
        ).scalar_one()
    assert active == 1  # one promoted, no second ready chip taken


def test_an_undated_open_then_a_ban_dated_3h_behind_makes_exactly_one_replacement(
    clean_db: sa.Engine,
    receiver: ReceiverProcess,
    worker: WorkerProcess,  # noqa: F811
    celery_client: Celery,  # noqa: F811
    pool: tuple[str, str, str],
) -> None:
    # Given an `open` without date_time, then a 403 dated by a Sao Paulo server (UTC-3, as Z)
    name, chip, best = pool
    undated = {k: v for k, v in opened(name).items() if k != "date_time"}
    assert post_evolution(receiver.url, undated).json()["status"] == "accepted"
    ban = close(name, 403, at=datetime.now(UTC) - timedelta(hours=3))
    # When it arrives (and twice more: Evolution repeats)
    answers = [post_evolution(receiver.url, ban).json() for _ in range(3)]
    # Then it is accepted each time (a repeat after the swap has nothing left to replace),
    # and the chip is replaced exactly once
    assert [a["status"] for a in answers] == ["accepted"] * 3
    assert answers[0]["replace"] == "banned"
    wait_for(lambda: chip_row(clean_db, best).status == "active")
    wait_for(lambda: _task_done(celery_client))
    assert len(_ops(clean_db, chip, "auto_replace")) == 1
    assert chip_row(clean_db, chip).status == "banned" and _open_on(clean_db, chip) == 0


def test_a_406_in_status_instance_also_replaces_at_once(
    clean_db: sa.Engine,
    receiver: ReceiverProcess,
    worker: WorkerProcess,  # noqa: F811
    pool: tuple[str, str, str],
) -> None:
    name, chip, best = pool
    status = envelope("status.instance", name, {"status": "closed", "disconnectionReasonCode": 406})
    assert post_evolution(receiver.url, status).json()["replace"] == "banned"
    wait_for(lambda: chip_row(clean_db, best).status == "active")
    assert chip_row(clean_db, chip).status == "banned"


def test_the_drop_that_crosses_flap_max_per_hour_replaces_the_chip_for_flapping(
    clean_db: sa.Engine,
    receiver: ReceiverProcess,
    worker: WorkerProcess,  # noqa: F811
    pool: tuple[str, str, str],
) -> None:
    # Given flap_max_per_hour 3 and two drops written by another service with plain UPDATEs
    name, chip, best = pool
    set_config(clean_db, flap_max_per_hour=3)
    for _ in range(3):  # healthy neighbours: one chip down of four is no gateway storm
        make_chip(clean_db, "active")
    with clean_db.begin() as conn:
        for connected in (False, True, False, True):
            conn.execute(
                sa.text("UPDATE chips SET evolution_connected = :c WHERE id = :id"),
                {"c": connected, "id": chip},
            )
    # When the gateway reports a third, ordinary close (no single drop is long)
    answer = post_evolution(receiver.url, close(name, 428))
    # Then the chip is replaced at once, for flapping
    assert answer.json()["replace"] == "flapping"
    wait_for(lambda: chip_row(clean_db, best).status == "active")
    (op,) = _ops(clean_db, chip, "auto_replace")
    assert op.metadata["reason"] == "flapping"
    assert chip_row(clean_db, chip).status == "degraded"


def _bought_at_salvy(engine: sa.Engine, standin: SalvyStandin, name: str, chip: str) -> dict:
    """A number bought at the Salvy stand-in, recorded as the chip's salvy_id."""
    number = standin.buy({"areaCode": 11, "name": name})
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE chips SET salvy_id = :s WHERE id = :id"),
            {"s": number["id"], "id": chip},
        )
    return number


def test_salvy_blocked_replaces_only_when_salvy_still_says_blocked(
    clean_db: sa.Engine,
    receiver: ReceiverProcess,
    worker: WorkerProcess,  # noqa: F811
    celery_client: Celery,  # noqa: F811
    salvy: SalvyStandin,  # noqa: F811
    pool: tuple[str, str, str],
) -> None:
    # Given a chip whose Salvy account is active again by the time a late `blocked` arrives
    name, chip, best = pool
    number = _bought_at_salvy(clean_db, salvy, name, chip)
    assert post_salvy(receiver.url, "phone-account.blocked", number["id"]).status_code == 200
    wait_for(lambda: _task_done(celery_client))
    assert chip_row(clean_db, chip).status == "active"
    # When Salvy blocks it for real and says so (twice: Svix repeats)
    salvy.set_status(number["id"], "blocked")
    for _ in range(2):
        assert post_salvy(receiver.url, "phone-account.blocked", number["id"]).status_code == 200
    # Then the chip is replaced once, reason salvy_blocked
    wait_for(lambda: chip_row(clean_db, best).status == "active")
    wait_for(lambda: _task_done(celery_client))
    (op,) = _ops(clean_db, chip, "auto_replace")
    assert op.metadata["reason"] == "salvy_blocked"


def test_salvy_canceled_for_a_chip_we_did_not_cancel_moves_it_out_and_alerts(
    clean_db: sa.Engine,
    receiver: ReceiverProcess,
    worker: WorkerProcess,  # noqa: F811
    celery_client: Celery,  # noqa: F811
    salvy: SalvyStandin,  # noqa: F811
    pool: tuple[str, str, str],
) -> None:
    name, chip, best = pool
    number = _bought_at_salvy(clean_db, salvy, name, chip)
    salvy.set_status(number["id"], "canceled")
    for _ in range(2):
        assert post_salvy(receiver.url, "phone-account.canceled", number["id"]).status_code == 200
    wait_for(lambda: chip_row(clean_db, chip).status == "cancelled")
    wait_for(lambda: _task_done(celery_client))
    assert chip_row(clean_db, best).status == "active"
    assert _open_on(clean_db, chip) == 0
    assert len(_ops(clean_db, chip, "cancel")) == 1
    with clean_db.connect() as conn:
        texts = list(conn.execute(sa.select(notification_outbox.c.texto)).scalars())
    assert sum("sem pedido nosso" in t for t in texts) == 1  # the replacement says so too


def _task_done(client: Celery) -> bool:
    inspect = client.control.inspect(timeout=0.5)
    busy = [*(inspect.active() or {}).values(), *(inspect.reserved() or {}).values()]
    return not any(busy)
