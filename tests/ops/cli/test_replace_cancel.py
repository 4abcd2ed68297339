"""`replace` and `cancel` from the command line, answered by a real Celery worker."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.store.schema import conversation_chips, operations
from tests.factories import add_conversations, chip_row, make_chip
from tests.ops.cli.conftest import Cli
from tests.worker.conftest import WorkerProcess

pytestmark = pytest.mark.worker


def active_conversations(engine: sa.Engine, chip_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(
                conversation_chips.c.chip_id == chip_id, conversation_chips.c.active
            )
        ).scalar_one()


def test_replace_by_id_with_wait_prints_the_result_of_the_swap(
    clean_db: sa.Engine, worker: WorkerProcess, cli: Cli, empty_queues
) -> None:
    # Given an active chip serving four conversations and a ready chip
    old = make_chip(clean_db, "active", trust=55)
    add_conversations(clean_db, old, 4)
    ready = make_chip(clean_db, "ready", trust=95)
    # When ops replace it by id and wait
    out = cli("replace", old, "--reason", "low_trust", "--wait")
    # Then the worker's JSON result is printed, and the pool shows the swap
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "replaced"
    assert chip_row(clean_db, old).status == "degraded"
    assert chip_row(clean_db, ready).status == "active"
    assert active_conversations(clean_db, ready) == 4


def test_replace_by_phone_number_in_local_format_finds_the_chip(
    clean_db: sa.Engine, worker: WorkerProcess, cli: Cli, empty_queues
) -> None:
    # Given a banned chip with conversations, known to ops by its phone number
    old = make_chip(clean_db, "active", trust=90)
    add_conversations(clean_db, old, 2)
    ready = make_chip(clean_db, "ready", trust=95)
    with clean_db.begin() as conn:
        conn.execute(sa.text("UPDATE chips SET status = 'banned' WHERE id = :id"), {"id": old})
    phone = chip_row(clean_db, old).telefone  # +55 11 9XXXX XXXX
    local = f"({phone[3:5]}) {phone[5:10]}-{phone[10:]}"
    # When ops type the number as they read it, without +55
    out = cli("replace", local, "--wait")
    # Then that chip was swapped and stays banned
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "replaced"
    assert chip_row(clean_db, old).status == "banned"
    assert chip_row(clean_db, ready).status == "active"
    assert active_conversations(clean_db, old) == 0


def test_replace_without_wait_queues_the_task_and_a_worker_runs_it(
    clean_db: sa.Engine, worker: WorkerProcess, cli: Cli, empty_queues
) -> None:
    # Given a low-trust active chip and a ready chip
    old = make_chip(clean_db, "active", trust=30)
    ready = make_chip(clean_db, "ready", trust=95)
    # When ops replace it without --wait
    out = cli("replace", old)
    # Then the command says what it queued, and the worker does the swap shortly after
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("queued orchestrator.replace_chip as task ")
    deadline = time.monotonic() + 20
    while chip_row(clean_db, ready).status != "active" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert chip_row(clean_db, ready).status == "active"
    assert chip_row(clean_db, old).status == "degraded"


def test_replace_of_a_chip_in_the_wrong_state_exits_2_with_the_rejection(
    clean_db: sa.Engine, worker: WorkerProcess, cli: Cli, empty_queues
) -> None:
    # Given a ready chip (nothing to replace)
    chip = make_chip(clean_db, "ready", trust=95)
    # When ops ask to replace it
    out = cli("replace", chip, "--wait")
    # Then the worker's rejection is shown, the exit code is 2, and nothing changed
    assert out.returncode == 2
    assert json.loads(out.stdout)["status"] == "rejected"
    assert chip_row(clean_db, chip).status == "ready"
    with clean_db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(operations)).scalar_one() == 0


def test_cancel_with_wait_releases_the_number_at_salvy(
    clean_db: sa.Engine, worker: WorkerProcess, salvy: SalvyStandin, cli: Cli, empty_queues
) -> None:
    # Given a degraded chip whose number was bought at (the stand-in of) Salvy
    number = salvy.buy({"areaCode": 11, "name": "cli-cancel-test"})
    chip = make_chip(clean_db, "degraded", telefone=number["phoneNumber"], salvy_id=number["id"])
    # When ops cancel it by phone number and wait
    out = cli("cancel", number["phoneNumber"], "--wait")
    # Then Salvy cancelled the number and the chip is cancelled, with its operation row
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "cancelled"
    assert salvy.numbers[number["id"]]["status"] == "canceled"
    assert chip_row(clean_db, chip).status == "cancelled"
    with clean_db.connect() as conn:
        kinds = conn.execute(sa.select(operations.c.operacao)).scalars().all()
    assert kinds == ["cancel"]


def test_a_hostile_reason_from_the_cli_is_stored_as_data_and_a_huge_one_refused(
    clean_db: sa.Engine, worker: WorkerProcess, cli: Cli, empty_queues
) -> None:
    # Given an active chip and a ready chip
    old = make_chip(clean_db, "active", trust=90)
    make_chip(clean_db, "ready", trust=95)
    # When ops paste a huge reason, the command refuses before queueing anything
    huge = cli("replace", old, "--reason", "x" * 5000, "--wait")
    assert huge.returncode == 2
    assert huge.stderr.count("\n") == 1 and "reason" in huge.stderr
    assert chip_row(clean_db, old).status == "active"
    # And a hostile one is stored verbatim, never executed
    hostile = "'); DROP TABLE chips; -- $(rm -rf /) `id`"
    out = cli("replace", old, "--reason", hostile, "--wait")
    assert out.returncode == 0, out.stderr
    with clean_db.connect() as conn:
        stored = conn.execute(
            sa.select(operations.c.metadata["reason"].astext).where(operations.c.chip_id == old)
        ).scalar_one()
    assert stored == hostile
    assert chip_row(clean_db, old).status == "degraded"
