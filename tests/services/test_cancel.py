"""Cancelling numbers: released at Salvy (the stand-in), then the chip marked cancelled."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from orchestrator.adapters.salvy import SalvyClient
from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.errors import Rejected
from orchestrator.services import conversations
from orchestrator.services.cancel import cancel
from orchestrator.store.schema import operations
from tests.factories import add_conversations, chip_row, make_chip
from tests.support.purchases import messages_in, rows

# -- cancel --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"), [("banned", "whatsapp-ban"), ("degraded", "unnecessary")]
)
def test_cancel_releases_the_number_with_the_reason_for_its_state(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin, status: str, reason: str
) -> None:
    # Given a chip in that state holding a Salvy number
    number = salvy.create(11, "x")
    chip = make_chip(clean_db, status, salvy_id=number.id, telefone=number.phone_number)
    # When it is cancelled
    result = cancel(clean_db, salvy, chip)
    # Then Salvy gets that reason, and the chip is cancelled with a cancel operation
    assert result["salvy_reason"] == reason
    assert standin.cancellations == [(number.id, reason)]
    assert chip_row(clean_db, chip).status == "cancelled"
    (op,) = rows(clean_db, sa.select(operations).where(operations.c.operacao == "cancel"))
    assert op.metadata["salvy_reason"] == reason


def test_an_active_chip_is_not_cancelled(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    number = salvy.create(11, "x")
    chip = make_chip(clean_db, "active", salvy_id=number.id, telefone=number.phone_number)
    with pytest.raises(Rejected):
        cancel(clean_db, salvy, chip)
    assert standin.cancellations == [] and chip_row(clean_db, chip).status == "active"


@pytest.mark.parametrize("status", ["degraded", "banned"])
def test_a_chip_with_open_conversations_is_not_cancelled_and_salvy_is_not_called(
    clean_db: sa.Engine, salvy: SalvyClient, standin: SalvyStandin, status: str
) -> None:
    # Given a replaced chip holding a Salvy number and one open conversation a router left on it
    number = salvy.create(11, "x")
    chip = make_chip(
        clean_db,
        status,
        salvy_id=number.id,
        telefone=number.phone_number,
        degraded_at=sa.func.now(),
    )
    add_conversations(clean_db, chip, 1)
    # When ops ask to cancel it
    with pytest.raises(Rejected) as caught:
        cancel(clean_db, salvy, chip)
    # Then it is refused, Salvy got no DELETE, and nothing changed
    assert caught.value.code == "has_conversations"
    assert standin.cancellations == [] and standin.numbers[number.id]["status"] == "active"
    assert chip_row(clean_db, chip).status == status
    assert rows(clean_db, sa.select(operations)) == [] and messages_in(clean_db, "operacoes") == []


class RouterDuringCancel(SalvyClient):
    """The real client; right after Salvy releases the number, a router opens a conversation
    on the chip (a plain autocommit INSERT from a stale read): the interleaving is forced."""

    def __init__(self, url: str, engine: sa.Engine, chip_id: str) -> None:
        super().__init__(url, "salvy_test_key", read_timeout=1.0)
        self.engine, self.chip_id = engine, chip_id

    def cancel(self, number_id: str, reason: str) -> None:
        super().cancel(number_id, reason)
        add_conversations(self.engine, self.chip_id, 1)


def test_a_conversation_arriving_during_the_salvy_call_stops_the_cancel_until_it_moves(
    clean_db: sa.Engine, standin: SalvyStandin
) -> None:
    # Given a degraded chip with no open conversation, an active chip, and a router that opens
    # one on it while Salvy is releasing its number
    standin.reset()
    plain = SalvyClient(standin.url, "salvy_test_key", read_timeout=1.0)
    number = plain.create(11, "x")
    chip = make_chip(clean_db, "degraded", salvy_id=number.id, telefone=number.phone_number)
    target = make_chip(clean_db, "active")
    racing = RouterDuringCancel(standin.url, clean_db, chip)
    # When it is cancelled
    with pytest.raises(Rejected) as caught:
        cancel(clean_db, racing, chip)
    # Then the re-check under the row lock refuses: the chip is not marked cancelled
    assert caught.value.code == "has_conversations"
    assert "already released at Salvy" in caught.value.reason
    assert chip_row(clean_db, chip).status == "degraded"
    assert rows(clean_db, sa.select(operations)) == []
    # And once the conversation has moved, cancelling again completes (Salvy: already done)
    assert conversations.migrate_conversations(clean_db, chip)["target_id"] == target
    assert cancel(clean_db, plain, chip)["status"] == "cancelled"
    assert standin.cancellations == [(number.id, "unnecessary")]
    assert chip_row(clean_db, chip).status == "cancelled"
    plain.close()
    racing.close()
