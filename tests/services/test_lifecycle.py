"""Lifecycle use cases on the real PostgreSQL: end state, operations row, idempotence, races."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from orchestrator.errors import Rejected, TransientError
from orchestrator.services import promote, replacement
from orchestrator.store.schema import conversation_chips, operations, outbox
from tests.factories import add_conversations, chip_row, conversations_on, make_chip, set_config

pytestmark = pytest.mark.db


def ops(engine: sa.Engine, chip_id: str, operacao: str | None = None) -> list[sa.Row]:
    stmt = sa.select(operations).where(operations.c.chip_id == chip_id)
    if operacao:
        stmt = stmt.where(operations.c.operacao == operacao)
    with engine.connect() as conn:
        return conn.execute(stmt).all()


def messages(engine: sa.Engine, canal: str | None = None) -> list[str]:
    stmt = sa.select(outbox.c.texto).order_by(outbox.c.id)
    if canal:
        stmt = stmt.where(outbox.c.canal == canal)
    with engine.connect() as conn:
        return list(conn.execute(stmt).scalars())


def snapshot_state(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        chips_ = conn.execute(
            sa.text("SELECT id, status, degraded_at FROM chips ORDER BY id")
        ).all()
        convs = conn.execute(
            sa.text("SELECT id, chip_id, migrated_from FROM conversation_chips ORDER BY id")
        ).all()
        n_ops = conn.execute(sa.text("SELECT count(*) FROM orchestrator_operations")).scalar()
        n_out = conn.execute(sa.text("SELECT count(*) FROM notification_outbox")).scalar()
    return [tuple(chips_), tuple(convs), n_ops, n_out]


def retrying(fn: Callable[[], dict], attempts: int = 6) -> dict:
    """Call fn again after TransientError's retry_after, as the Celery task does (max 5 retries)."""
    for _ in range(attempts - 1):
        try:
            return fn()
        except TransientError as error:
            time.sleep(error.retry_after or 0.5)
    return fn()


# --- replace -------------------------------------------------------------------------------


def test_replace_moves_every_conversation_to_the_best_ready_chip(clean_db: sa.Engine) -> None:
    old = make_chip(clean_db, "active", trust=40)
    add_conversations(clean_db, old, 7)
    make_chip(clean_db, "ready", trust=88)
    best = make_chip(clean_db, "ready", trust=97)
    make_chip(clean_db, "ready", trust=99, degraded_at=sa.func.now())  # once degraded: never again

    result = replacement.replace_chip(clean_db, old, "low_trust")

    assert result["status"] == "replaced"
    assert result["replacement_id"] == best
    assert result["conversas_migradas"] == 7
    assert chip_row(clean_db, old).status == "degraded"
    assert chip_row(clean_db, old).degraded_at is not None
    assert chip_row(clean_db, best).status == "active"
    assert chip_row(clean_db, best).promoted_to_active_at is not None
    assert conversations_on(clean_db, old) == 0
    assert conversations_on(clean_db, best) == 7
    with clean_db.connect() as conn:
        moved = conn.execute(
            sa.select(conversation_chips.c.migrated_from, conversation_chips.c.migrated_at).where(
                conversation_chips.c.chip_id == best
            )
        ).all()
    assert all(m.migrated_from == old and m.migrated_at is not None for m in moved)
    [op] = ops(clean_db, old, "auto_replace")
    assert op.chip_destino_id == best
    assert op.metadata == {
        "conversas_migradas": 7,
        "trust_degradado": 40.0,
        "trust_novo": 97.0,
        "reason": "low_trust",
    }
    assert op.motivo == "Trust Score 40 < 60"
    assert "Auto-Replace executado" in messages(clean_db, "operacoes")[0]


def test_replace_ignores_ready_chips_below_trust_min_for_ready(clean_db: sa.Engine) -> None:
    old = make_chip(clean_db, "active", trust=40)
    make_chip(clean_db, "ready", trust=84)
    result = replacement.replace_chip(clean_db, old)
    assert result["status"] == "no_ready_chip"


def test_replacing_twice_leaves_one_operation_and_the_same_state(clean_db: sa.Engine) -> None:
    old = make_chip(clean_db, "active", trust=40)
    add_conversations(clean_db, old, 3)
    make_chip(clean_db, "ready", trust=95)
    make_chip(clean_db, "ready", trust=90)
    replacement.replace_chip(clean_db, old)
    before = snapshot_state(clean_db)
    with pytest.raises(Rejected, match="degraded"):
        replacement.replace_chip(clean_db, old)
    assert snapshot_state(clean_db) == before
    assert len(ops(clean_db, old, "auto_replace")) == 1


def test_a_banned_chip_stays_banned_after_replacement(clean_db: sa.Engine) -> None:
    old = make_chip(clean_db, "banned", trust=80)
    add_conversations(clean_db, old, 2)
    new = make_chip(clean_db, "ready", trust=95)
    result = replacement.replace_chip(clean_db, old, "banned")
    assert (result["status"], result["chip_status"]) == ("replaced", "banned")
    assert chip_row(clean_db, old).status == "banned"
    assert conversations_on(clean_db, new) == 2
    assert ops(clean_db, old, "auto_replace")[0].motivo == "Chip banido"


def test_an_active_chip_reported_banned_is_marked_banned(clean_db: sa.Engine) -> None:
    old = make_chip(clean_db, "active")
    make_chip(clean_db, "ready", trust=95)
    replacement.replace_chip(clean_db, old, "banned")
    assert chip_row(clean_db, old).status == "banned"


def test_banned_without_ready_moves_conversations_to_the_least_loaded_healthy_chip(
    clean_db: sa.Engine,
) -> None:
    old = make_chip(clean_db, "banned")
    add_conversations(clean_db, old, 4)
    busy = make_chip(clean_db, "active", trust=95)
    add_conversations(clean_db, busy, 10)
    light = make_chip(clean_db, "active", trust=70)
    add_conversations(clean_db, light, 1)
    make_chip(clean_db, "active", trust=99, evolution_connected=False)  # unreachable: no
    make_chip(clean_db, "active", trust=30)  # degraded itself: no

    result = replacement.replace_chip(clean_db, old, "banned")

    assert result["status"] == "no_ready_chip"
    assert result["action"] == "conversations_moved"
    assert result["target_id"] == light
    assert conversations_on(clean_db, old) == 0
    assert conversations_on(clean_db, light) == 5
    assert chip_row(clean_db, old).degraded_at is not None
    [op] = ops(clean_db, old, "migration")
    assert op.chip_destino_id == light and op.metadata["conversas_migradas"] == 4
    assert any("banido" in m for m in messages(clean_db, "alertas"))


def test_low_trust_without_ready_keeps_serving_and_alerts_once(clean_db: sa.Engine) -> None:
    old = make_chip(clean_db, "active", trust=30)
    add_conversations(clean_db, old, 2)
    for _ in range(3):
        result = replacement.replace_chip(clean_db, old, "low_trust")
        assert (result["status"], result["action"]) == ("no_ready_chip", "kept_serving")
    assert chip_row(clean_db, old).status == "active"
    assert conversations_on(clean_db, old) == 2
    assert len(messages(clean_db, "alertas")) == 1
    assert ops(clean_db, old) == []


def test_a_replacement_after_the_no_ready_alert_re_arms_it(clean_db: sa.Engine) -> None:
    old = make_chip(clean_db, "active", trust=30)
    replacement.replace_chip(clean_db, old)
    make_chip(clean_db, "ready", trust=95)
    assert replacement.replace_chip(clean_db, old)["status"] == "replaced"
    with clean_db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alert_state")).scalar() == 0


@pytest.mark.parametrize("status", ["ready", "warming", "degraded", "cancelled", "provisioning"])
def test_replace_refuses_a_chip_in_the_wrong_state(clean_db: sa.Engine, status: str) -> None:
    extra = {"telefone": None} if status == "provisioning" else {}
    chip = make_chip(clean_db, status, **extra)
    before = snapshot_state(clean_db)
    with pytest.raises(Rejected) as info:
        replacement.replace_chip(clean_db, chip)
    assert info.value.code == "wrong_state"
    assert status in info.value.reason
    assert snapshot_state(clean_db) == before


@pytest.mark.parametrize(
    ("chip_id", "code"),
    [
        ("not-a-uuid", "malformed"),
        ("", "malformed"),
        (12345, "malformed"),
        (None, "malformed"),
        (str(uuid.uuid4()), "unknown_chip"),
    ],
)
def test_replace_refuses_bad_ids_and_changes_nothing(
    clean_db: sa.Engine, chip_id: object, code: str
) -> None:
    make_chip(clean_db, "active")
    before = snapshot_state(clean_db)
    with pytest.raises(Rejected) as info:
        replacement.replace_chip(clean_db, chip_id)
    assert info.value.code == code
    assert snapshot_state(clean_db) == before


def test_a_hostile_reason_is_stored_as_data(clean_db: sa.Engine) -> None:
    old = make_chip(clean_db, "active")
    make_chip(clean_db, "ready", trust=95)
    hostile = "x'); DROP TABLE chips; --"
    replacement.replace_chip(clean_db, old, hostile)
    [op] = ops(clean_db, old, "auto_replace")
    assert op.metadata["reason"] == hostile
    assert chip_row(clean_db, old).status == "degraded"


def test_a_huge_reason_is_rejected(clean_db: sa.Engine) -> None:
    old = make_chip(clean_db, "active")
    with pytest.raises(Rejected, match="reason"):
        replacement.replace_chip(clean_db, old, "x" * 10_000)
    assert chip_row(clean_db, old).status == "active"


# --- promotions ----------------------------------------------------------------------------


def test_warming_chip_is_promoted_to_ready_with_its_operation(clean_db: sa.Engine) -> None:
    chip = make_chip(
        clean_db, "warming", trust=90, warming_started_at=sa.func.now() - timedelta(days=21)
    )
    assert promote.promote_warming_to_ready(clean_db, chip)["status"] == "promoted"
    row = chip_row(clean_db, chip)
    assert (row.status, row.ready_at is not None) == ("ready", True)
    [op] = ops(clean_db, chip, "promotion_warming_ready")
    assert op.metadata["dias"] == 21
    with pytest.raises(Rejected, match="not warming"):
        promote.promote_warming_to_ready(clean_db, chip)
    assert len(ops(clean_db, chip)) == 1


@pytest.mark.parametrize(
    "values",
    [
        {"trust": 84},
        {"fase_warmup": "aquecimento"},
        {"warming_started_at": sa.func.now() - timedelta(days=20, hours=23)},
    ],
)
def test_an_ineligible_warming_chip_is_not_promoted(clean_db: sa.Engine, values: dict) -> None:
    chip = make_chip(clean_db, "warming", **{"trust": 90, **values})
    with pytest.raises(Rejected) as info:
        promote.promote_warming_to_ready(clean_db, chip)
    assert info.value.code == "not_eligible"
    assert chip_row(clean_db, chip).status == "warming"


def test_ready_chip_is_promoted_while_production_is_short(clean_db: sa.Engine) -> None:
    set_config(clean_db, producao_min=2, producao_max=3)
    make_chip(clean_db, "active")
    chip = make_chip(clean_db, "ready")
    assert promote.promote_ready_to_active(clean_db, chip)["status"] == "promoted"
    assert chip_row(clean_db, chip).status == "active"
    assert len(ops(clean_db, chip, "promotion_ready_active")) == 1
    other = make_chip(clean_db, "ready")
    result = promote.promote_ready_to_active(clean_db, other)
    assert result["status"] == "skipped"
    assert chip_row(clean_db, other).status == "ready"


def test_a_rolled_back_change_leaves_no_message(clean_db: sa.Engine) -> None:
    old = make_chip(clean_db, "active", trust=30)
    make_chip(clean_db, "ready", trust=95)
    with clean_db.begin() as conn:  # a stuck ready chip row: the CAS inside replace must fail
        conn.execute(
            sa.text(
                "ALTER TABLE chips ADD CONSTRAINT tmp_no_degraded CHECK (status <> 'degraded') NOT VALID"
            )
        )
    try:
        with pytest.raises(Rejected):
            replacement.replace_chip(clean_db, old)
    finally:
        with clean_db.begin() as conn:
            conn.execute(sa.text("ALTER TABLE chips DROP CONSTRAINT tmp_no_degraded"))
    assert messages(clean_db) == []
    assert chip_row(clean_db, old).status == "active"
    assert ops(clean_db, old) == []


@pytest.mark.parametrize("status", ["active", "banned"])
def test_a_redelivered_replace_whose_first_run_committed_answers_with_that_swap(
    clean_db: sa.Engine, status: str
) -> None:
    # Given a chip with 3 conversations and two ready chips, replaced by task t-1 (whose worker
    # then died before acknowledging the message)
    old = make_chip(clean_db, status, trust=20)
    add_conversations(clean_db, old, 3)
    for trust in (95, 90):
        make_chip(clean_db, "ready", trust=trust)
    first = replacement.replace_chip(clean_db, old, "banned", task_id="t-1")
    assert first["status"] == "replaced"
    # When the same message (task t-1) is delivered again
    again = replacement.replace_chip(clean_db, old, "banned", task_id="t-1")
    # Then it answers with the swap already done, and does nothing more
    assert again == {**first, "redelivered": True}
    with clean_db.connect() as conn:
        ops = conn.execute(sa.select(operations.c.id).where(operations.c.chip_id == old)).all()
    assert len(ops) == 1
    # And another task on the same chip is still told it is no longer replaceable
    with pytest.raises(Rejected) as info:
        replacement.replace_chip(clean_db, old, "banned", task_id="t-2")
    assert info.value.code == "wrong_state"
