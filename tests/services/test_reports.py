"""`report` and `history` read from the real database: exact counts on a generated month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from orchestrator.domain.report import COST_UNKNOWN, Month
from orchestrator.errors import Rejected
from orchestrator.services import conversations, reports
from orchestrator.services.replacement import replace_chip
from orchestrator.store.schema import operations
from tests.factories import add_conversations, chip_row, make_chip, set_config

pytestmark = pytest.mark.db

MICRO = timedelta(microseconds=1)


def months_ago(n: int) -> Month:
    """The calendar month n months before this one (UTC)."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - n
    return Month(index // 12, index % 12 + 1)


def op(
    engine: sa.Engine,
    operacao: str,
    at: datetime,
    chip_id: str | None = None,
    *,
    sucesso: bool = True,
    motivo: str = "gerado",
    **metadata: object,
) -> None:
    """One operation row written as another service would, at a chosen time."""
    with engine.begin() as conn:
        conn.execute(
            sa.insert(operations).values(
                operacao=operacao,
                chip_id=chip_id,
                motivo=motivo,
                sucesso=sucesso,
                metadata=metadata,
                created_at=at,
            )
        )


def a_generated_month(engine: sa.Engine, month: Month) -> dict[str, str]:
    """Operations inside, on and around one month's edges, and chips held at various times."""
    start, end = month.start, month.end
    mid = start + timedelta(days=10)
    before, after = start - timedelta(days=20), end + timedelta(days=2)
    chips = {
        "held_all_month": make_chip(engine, "active", created_at=before),
        "bought_in_month": make_chip(engine, "warming", created_at=mid),
        "bought_after": make_chip(engine, "warming", created_at=after),
        "cancelled_in_month": make_chip(engine, "cancelled", created_at=before),
        "cancelled_before": make_chip(engine, "cancelled", created_at=before - timedelta(days=30)),
        "cancelled_by_others": make_chip(
            engine, "cancelled", created_at=before, updated_at=start + timedelta(hours=1)
        ),
        "intent": make_chip(
            engine, "provisioning", telefone=None, provisioning_name="rep-i", created_at=before
        ),
        "failed_intent": make_chip(engine, "cancelled", telefone=None, created_at=mid),
    }
    a = chips["held_all_month"]
    # Purchases: 3 inside (one on the first instant), 1 failed, 2 just outside
    for at in (start, mid, end - MICRO):
        op(engine, "auto_provision", at, a)
    op(engine, "auto_provision", mid, None, sucesso=False)
    # ... and an intent no worker ever took (the I/O worker was down): not a failed purchase
    op(engine, "auto_provision", mid, None, sucesso=False, causa="nao_retirada")
    op(engine, "auto_provision", start - MICRO, a)
    op(engine, "auto_provision", end, a)
    # Cancellations: 2 inside, 1 that failed, 1 the month before
    op(engine, "cancel", mid, chips["cancelled_in_month"])
    op(engine, "cancel", mid, a)
    op(engine, "cancel", mid, a, sucesso=False)
    op(engine, "cancel", before, chips["cancelled_before"])
    # Replacements with their reasons (as the task recorded them) and conversations moved
    op(engine, "auto_replace", mid, a, reason="banned", conversas_migradas=4)
    op(engine, "auto_replace", mid, a, reason="banned", conversas_migradas=0)
    op(engine, "auto_replace", mid, a, reason="low_trust", conversas_migradas=3)
    op(engine, "auto_replace", mid, a, motivo="Chip banido", reason=None, conversas_migradas=2)
    op(engine, "auto_replace", mid, a, motivo="Solicitado", conversas_migradas="lixo")
    op(engine, "auto_replace", mid, a, reason="flapping", conversas_migradas=-5)
    op(engine, "auto_replace", after, a, reason="banned", conversas_migradas=50)
    op(engine, "migration", mid, a, conversas_migradas=5)
    op(engine, "migration", mid, a, conversas_migradas="7")
    op(engine, "migration", mid, a, sucesso=False, conversas_migradas=100)
    op(engine, "promotion_ready_active", mid, a)
    return chips


#: What a_generated_month holds for its month, exactly.
EXPECTED = {
    "bought": 3,
    "purchase_failures": 1,
    "cancelled": 2,
    "replaced": {
        "total": 6,
        "by_reason": {"banned": 3, "flapping": 1, "low_trust": 1, "sem_motivo": 1},
    },
    "conversations_moved": 4 + 0 + 3 + 2 + 5 + 7,
}


def test_a_generated_month_gives_exact_counts_and_the_numbers_billed(clean_db: sa.Engine) -> None:
    # Given a month of operations and chips held before, during and after it, at R$ 49.90 each
    month = months_ago(2)
    a_generated_month(clean_db, month)
    set_config(clean_db, number_monthly_cost=49.90)
    # When the month's report is read
    data = reports.month_report(clean_db, month.label)
    # Then every count is exact, edges included (first instant in, next month's first out)
    assert {k: data[k] for k in EXPECTED} == EXPECTED
    assert data["month"] == month.label
    assert data["period"]["in_progress"] is False
    # And billed: held all month, bought in it, cancelled in it, cancelled by others in it
    assert data["cost"] == {
        "currency": "BRL",
        "monthly_cost": 49.9,
        "numbers_billed": 4,
        "total": 199.6,
    }


def test_an_unknown_monthly_cost_is_reported_as_unknown_not_zero(clean_db: sa.Engine) -> None:
    # Given the generated month and number_monthly_cost NULL (the default)
    month = months_ago(2)
    a_generated_month(clean_db, month)
    # When the report is read, Then the numbers billed are known and the cost is not
    cost = reports.month_report(clean_db, month.label)["cost"]
    assert cost["numbers_billed"] == 4
    assert cost["total"] is None
    assert cost["unknown_reason"] == COST_UNKNOWN


def test_the_month_after_counts_what_fell_on_its_first_instant(clean_db: sa.Engine) -> None:
    # Given the generated month
    month = months_ago(2)
    a_generated_month(clean_db, month)
    # When the next month is read
    data = reports.month_report(clean_db, months_ago(1).label)
    # Then it holds the purchase on its first instant and the late replacement, nothing else
    assert data["bought"] == 1
    assert data["replaced"] == {"total": 1, "by_reason": {"banned": 1}}
    assert data["conversations_moved"] == 50
    assert data["cancelled"] == 0


def test_this_months_replacements_and_moves_are_read_as_the_services_record_them(
    clean_db: sa.Engine,
) -> None:
    # Given a banned chip swapped for a ready one (4 conversations moved), and 2 conversations
    # that landed on it afterwards and were swept to its replacement
    old = make_chip(clean_db, "active")
    add_conversations(clean_db, old, 4)
    make_chip(clean_db, "ready", trust=95)
    assert replace_chip(clean_db, old, "banned")["status"] == "replaced"
    add_conversations(clean_db, old, 2)
    assert conversations.migrate_conversations(clean_db, old)["conversas_migradas"] == 2
    # When this month's report is read (the default)
    data = reports.month_report(clean_db)
    # Then
    assert data["replaced"] == {"total": 1, "by_reason": {"banned": 1}}
    assert data["conversations_moved"] == 6
    assert data["period"]["in_progress"] is True
    assert data["cost"]["numbers_billed"] == 2


def test_a_malformed_or_future_month_is_rejected_and_changes_nothing(clean_db: sa.Engine) -> None:
    for text in ("2026-13", "novembro", f"{datetime.now(UTC).year + 1}-01"):
        with pytest.raises(Rejected):
            reports.month_report(clean_db, text)


def test_a_history_lists_operations_and_state_changes_newest_first(clean_db: sa.Engine) -> None:
    # Given a chip that was the replacement of a banned chip, then itself replaced
    first = make_chip(clean_db, "active")
    add_conversations(clean_db, first, 3)
    second = make_chip(clean_db, "ready", trust=95)
    replace_chip(clean_db, first, "banned")
    make_chip(clean_db, "ready", trust=94)
    replace_chip(clean_db, second, "low_trust_by_ops")
    # When its history is read by phone number
    data = reports.chip_history(clean_db, chip_row(clean_db, second).telefone)
    # Then newest first: its own replacement as origin, then its arrival as destination
    events = data["events"]
    assert [e["at"] for e in events] == sorted((e["at"] for e in events), reverse=True)
    ops = [(e["operacao"], e["role"]) for e in events if e["kind"] == "operation"]
    assert ops == [("auto_replace", "origin"), ("auto_replace", "destination")]
    arrival = next(e for e in events if e.get("role") == "destination")
    assert arrival["other_chip_id"] == first
    assert arrival["metadata"]["conversas_migradas"] == 3
    states = [e["state"] for e in events if e["kind"] == "state"]
    assert {"registered", "ready", "active", "degraded"} <= set(states)
    assert data["chip"]["status"] == "degraded"


def test_a_history_keeps_the_newest_operations_when_limited(clean_db: sa.Engine) -> None:
    # Given a chip with five operations a minute apart
    chip = make_chip(clean_db, "active")
    base = datetime.now(UTC) - timedelta(hours=1)
    for i in range(5):
        op(clean_db, "migration", base + timedelta(minutes=i), chip, motivo=f"op {i}")
    # When its history is read with limit 2
    data = reports.chip_history(clean_db, chip, limit=2)
    # Then the two newest are shown and the history says older ones were left out
    shown = [e["motivo"] for e in data["events"] if e["kind"] == "operation"]
    assert shown == ["op 4", "op 3"]
    assert data["older_operations_not_shown"] is True


@pytest.mark.parametrize("ref", ["00000000-0000-4000-8000-000000000000", "+55 11 90000-0000"])
def test_an_unknown_chip_has_no_history(clean_db: sa.Engine, ref: str) -> None:
    with pytest.raises(Rejected) as error:
        reports.chip_history(clean_db, ref)
    assert error.value.code == "unknown_chip"


def test_rows_other_services_wrote_in_odd_shapes_are_read_not_crashed_on(
    clean_db: sa.Engine,
) -> None:
    # Given operations whose metadata is a list, a string, JSON null and SQL NULL
    chip = make_chip(clean_db, "active")
    now = datetime.now(UTC)
    with clean_db.begin() as conn:
        for metadata in ("'[1, 2]'", "'\"texto\"'", "'null'", "NULL"):
            conn.execute(
                sa.text(
                    "INSERT INTO orchestrator_operations (operacao, chip_id, metadata, created_at)"
                    f" VALUES ('auto_replace', :chip, {metadata}::jsonb, :at)"
                ),
                {"chip": chip, "at": now},
            )
    # When the month's report and the chip's history are read
    data = reports.month_report(clean_db)
    events = reports.chip_history(clean_db, chip)["events"]
    # Then each row is one sem_motivo replacement that moved nothing, shown as it was written
    assert data["replaced"] == {"total": 4, "by_reason": {"sem_motivo": 4}}
    assert data["conversations_moved"] == 0
    shown = [e["metadata"] for e in events if e["kind"] == "operation"]
    assert sorted(map(str, shown)) == sorted(
        ["{'valor': [1, 2]}", "{'valor': 'texto'}", "{}", "{}"]
    )
