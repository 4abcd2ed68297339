"""auto_cancel_banned: banned numbers released just before their billing month turns, on the real
database and the Salvy stand-in over HTTP.

The cycle's plan is read as the cycle reads it (cycle.read_plan, the instant given: the real
clock's day of the month must not decide a test); each planned cancel then runs the cancel
task's use case (services/cancel.py) against the stand-in.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from orchestrator.adapters.salvy import SalvyClient, SalvyNumber
from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.domain.release import month_turns_at
from orchestrator.errors import Rejected
from orchestrator.services import cycle
from orchestrator.services.cancel import cancel
from orchestrator.services.replacement import replace_chip
from orchestrator.store import repository as repo
from tests.factories import add_conversations, chip_row, make_chip, set_config
from tests.support.purchases import messages_in

pytestmark = pytest.mark.db


def db_now(engine: sa.Engine) -> datetime:
    with engine.connect() as conn:
        return repo.db_now(conn)


def mid_month(engine: sa.Engine) -> datetime:
    """Fifteen days before this month turns (UTC)."""
    return month_turns_at(db_now(engine)) - timedelta(days=15)


def month_end(engine: sa.Engine) -> datetime:
    """An hour before this month turns (UTC)."""
    return month_turns_at(db_now(engine)) - timedelta(hours=1)


def planned_cancels(engine: sa.Engine, now: datetime) -> tuple[str, ...]:
    """What the cycle would send cancel_chip for, planning at `now`."""
    plan, _, _, _ = cycle.read_plan(engine, now=now)
    return plan.cancel


def banned_and_replaced(
    engine: sa.Engine, salvy: SalvyClient, reason: str = "banned"
) -> tuple[str, SalvyNumber]:
    """A chip holding a Salvy number, banned while serving and swapped for a ready chip."""
    number = salvy.create(11, "x")
    status = "banned" if reason == "salvy_blocked" else "active"
    chip = make_chip(engine, status, salvy_id=number.id, telefone=number.phone_number)
    make_chip(engine, "ready", trust=95)
    assert replace_chip(engine, chip, reason)["status"] == "replaced"
    assert chip_row(engine, chip).status == "banned"
    return chip, number


def test_a_banned_chip_replaced_mid_month_is_released_only_when_its_month_is_about_to_turn(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given a chip banned and replaced, its number still held, auto_cancel_banned on
    chip, number = banned_and_replaced(clean_db, salvy)
    set_config(clean_db, auto_cancel_banned=True)
    # When the cycle plans mid-month, Then it leaves the number alone (same bill, appeal open)
    assert planned_cancels(clean_db, mid_month(clean_db)) == ()
    # When it plans in the month's last hour, Then it releases it
    assert planned_cancels(clean_db, month_end(clean_db)) == (chip,)
    assert cancel(clean_db, salvy, chip)["status"] == "cancelled"
    assert standin.cancellations == [(number.id, "whatsapp-ban")]
    assert chip_row(clean_db, chip).status == "cancelled"


def test_with_auto_cancel_banned_off_a_banned_number_is_never_planned_for_release(
    clean_db: sa.Engine, salvy: SalvyClient
) -> None:
    banned_and_replaced(clean_db, salvy)
    assert planned_cancels(clean_db, month_end(clean_db)) == ()


def test_a_banned_chip_holding_open_conversations_is_not_released_at_month_end(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given two banned, replaced chips; a router left one open conversation on the second
    clean, _ = banned_and_replaced(clean_db, salvy)
    holding, number = banned_and_replaced(clean_db, salvy)
    add_conversations(clean_db, holding, 1)
    set_config(clean_db, auto_cancel_banned=True)
    # When the cycle plans in the month's last hour
    plan, _, _, _ = cycle.read_plan(clean_db, now=month_end(clean_db))
    # Then only the clean one is released; the other's conversation is moved first
    assert plan.cancel == (clean,)
    assert holding in plan.migrate
    # And a cancel sent for it anyway is refused before Salvy is called
    with pytest.raises(Rejected) as caught:
        cancel(clean_db, salvy, holding)
    assert caught.value.code == "has_conversations"
    assert standin.numbers[number.id]["status"] == "active"
    assert chip_row(clean_db, holding).status == "banned"


def reactivate_after_cancel(salvy: SalvyClient, standin: SalvyStandin, number_id: str) -> None:
    """Someone cancelled the line at Salvy and Salvy reactivated it (canceledAt stays set)."""
    salvy.cancel(number_id, "unnecessary")
    standin.set_status(number_id, "active")


@pytest.mark.parametrize("how", ["reactivated", "pending", "unblocked"])
def test_a_banned_number_salvy_brought_back_is_kept_and_ops_are_told_once(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin, how: str
) -> None:
    # Given a banned, replaced chip whose line Salvy brought back: reactivated after a cancel,
    # being activated again, or unblocked after the block it was replaced for
    chip, number = banned_and_replaced(
        clean_db, salvy, "salvy_blocked" if how == "unblocked" else "banned"
    )
    if how == "reactivated":
        reactivate_after_cancel(salvy, standin, number.id)
    elif how == "pending":
        standin.set_status(number.id, "pending")
    cancelled_before = standin.cancellations
    set_config(clean_db, auto_cancel_banned=True)
    # When the cycle plans its release at month end (it cannot know) and the task runs twice
    assert planned_cancels(clean_db, month_end(clean_db)) == (chip,)
    first = cancel(clean_db, salvy, chip)
    second = cancel(clean_db, salvy, chip)
    # Then the task re-read the account at Salvy and kept the number: no DELETE, chip banned
    assert first == {"status": "skipped", "chip_id": chip, "reason": f"kept_at_salvy: {how}"}
    assert second["status"] == "skipped"
    assert standin.cancellations == cancelled_before
    assert standin.numbers[number.id]["status"] != "canceled"
    assert chip_row(clean_db, chip).status == "banned"
    # And ops were told once, in #operacoes
    (told,) = messages_in(clean_db, "operacoes")[-1:]
    assert "nao foi cancelado" in told
    assert sum("nao foi cancelado" in m for m in messages_in(clean_db, "operacoes")) == 1


def test_a_whatsapp_ban_whose_line_salvy_blocked_afterwards_is_still_released(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given a WhatsApp-banned, replaced chip whose line Salvy has since blocked
    chip, number = banned_and_replaced(clean_db, salvy)
    standin.set_status(number.id, "blocked")
    # When its release runs, Then Salvy is asked to cancel it and the chip is cancelled
    assert cancel(clean_db, salvy, chip)["status"] == "cancelled"
    assert standin.cancellations == [(number.id, "whatsapp-ban")]
