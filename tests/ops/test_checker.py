"""The invariant checker on the real PostgreSQL: each bad state (made with raw SQL) is reported."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa

from orchestrator.ops import checker
from orchestrator.services import promote, replacement
from tests.factories import add_conversations, make_chip, set_config

pytestmark = pytest.mark.db


def op(engine: sa.Engine, operacao: str, chip_id: str | None, **values: object) -> None:
    """Insert one operations row by hand (as a buggy or crashed writer would leave it)."""
    values = {"sucesso": True, "destino": None, "metadata": "{}", "minutes": 0, **values}
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orchestrator_operations"
                " (operacao, chip_id, chip_destino_id, motivo, metadata, sucesso, created_at)"
                " VALUES (:operacao, :chip, :destino, 'teste', CAST(:metadata AS jsonb), :sucesso,"
                "         now() + make_interval(mins => :minutes))"
            ),
            {"operacao": operacao, "chip": chip_id, **values},
        )


def kinds(engine: sa.Engine) -> list[str]:
    return sorted(v.kind for v in checker.find_violations(engine))


def test_a_clean_pool_after_real_use_cases_reports_nothing(clean_db: sa.Engine) -> None:
    # Given a pool worked by the real use cases: a replacement, a promotion, a banned chip moved
    old = make_chip(clean_db, "active", trust=40)
    add_conversations(clean_db, old, 3)
    make_chip(clean_db, "ready", trust=95)
    make_chip(clean_db, "ready", trust=92)
    warming = make_chip(clean_db, "warming", trust=95)
    set_config(clean_db, warmup_days=1, producao_min=3)
    replacement.replace_chip(clean_db, old, "low_trust")
    promote.promote_warming_to_ready(clean_db, warming)
    promote.promote_ready_to_active(clean_db, warming)
    banned = make_chip(clean_db, "banned", trust=90)
    add_conversations(clean_db, banned, 2)
    # When the checker runs
    found = checker.find_violations(clean_db)
    # Then it finds nothing
    assert found == []


def test_a_ready_chip_promoted_by_two_replacements_is_reported(clean_db: sa.Engine) -> None:
    # Given one ready chip recorded as the replacement of two different chips
    a, b = make_chip(clean_db, "degraded"), make_chip(clean_db, "degraded")
    target = make_chip(clean_db, "active")
    op(clean_db, "auto_replace", a, destino=target)
    op(clean_db, "auto_replace", b, destino=target, minutes=1)
    # Then the checker reports it promoted twice
    found = [v for v in checker.find_violations(clean_db) if v.kind == "promoted_twice"]
    assert [v.chip_id for v in found] == [target]


def test_a_chip_promoted_twice_without_leaving_active_is_reported(clean_db: sa.Engine) -> None:
    # Given a chip with two promotions to active and no demotion between them
    chip = make_chip(clean_db, "active")
    op(clean_db, "promotion_ready_active", chip)
    op(clean_db, "promotion_ready_active", chip, minutes=1)
    # Then it is reported
    assert kinds(clean_db) == ["promoted_twice"]


def test_a_chip_promoted_again_after_being_replaced_is_not_reported(clean_db: sa.Engine) -> None:
    # Given up, down (replaced), up again
    chip, other = make_chip(clean_db, "active"), make_chip(clean_db, "active")
    degraded = make_chip(clean_db, "degraded")
    op(clean_db, "promotion_ready_active", chip)
    op(clean_db, "auto_replace", chip, destino=other, minutes=1)
    op(clean_db, "auto_replace", degraded, destino=chip, minutes=2)
    # Then nothing is reported about promotions
    assert "promoted_twice" not in kinds(clean_db)


def test_two_replacements_of_one_degraded_chip_are_reported(clean_db: sa.Engine) -> None:
    # Given a degraded chip with two successful auto_replace rows to two different chips
    chip = make_chip(clean_db, "degraded")
    first, second = make_chip(clean_db, "active"), make_chip(clean_db, "active")
    op(clean_db, "auto_replace", chip, destino=first)
    op(clean_db, "auto_replace", chip, destino=second, minutes=1)
    # Then the checker reports the double replacement
    assert kinds(clean_db) == ["replaced_twice"]


def test_an_active_conversation_on_a_degraded_chip_is_reported(clean_db: sa.Engine) -> None:
    # Given a degraded (already replaced) chip still holding an active conversation
    chip = make_chip(clean_db, "degraded")
    op(clean_db, "auto_replace", chip, destino=make_chip(clean_db, "active"))
    add_conversations(clean_db, chip, 1)
    # Then it is reported against that chip
    found = checker.find_violations(clean_db)
    assert [(v.kind, v.chip_id) for v in found] == [("conversation_on_inactive_chip", chip)]


def test_conversations_on_low_trust_or_fresh_banned_chips_are_fine(clean_db: sa.Engine) -> None:
    # Given a low-trust chip kept serving and a just-banned chip the cycle has not handled yet
    add_conversations(clean_db, make_chip(clean_db, "active", trust=10), 2)
    add_conversations(clean_db, make_chip(clean_db, "banned"), 2)
    # Then neither is a violation
    assert kinds(clean_db) == []


def test_a_handled_banned_chip_with_conversations_is_reported(clean_db: sa.Engine) -> None:
    # Given a banned chip already replaced (degraded_at set) that still serves a conversation
    chip = make_chip(clean_db, "banned", degraded_at=sa.func.now())
    add_conversations(clean_db, chip, 1)
    # Then it is reported
    assert kinds(clean_db) == ["conversation_on_inactive_chip"]


@pytest.mark.parametrize("status", ["provisioning", "warming", "ready", "degraded", "cancelled"])
def test_an_open_conversation_on_a_chip_of_any_status_but_active_is_reported(
    clean_db: sa.Engine, status: str
) -> None:
    # Given a router that left an open conversation on a chip in that status
    extra = (
        {"telefone": None, "provisioning_name": "chiporch-x"} if status == "provisioning" else {}
    )
    chip = make_chip(clean_db, status, **extra)
    add_conversations(clean_db, chip, 2)
    # Then the checker names that chip
    found = [
        v for v in checker.find_violations(clean_db) if v.kind == "conversation_on_inactive_chip"
    ]
    assert [(v.chip_id, v.detail) for v in found] == [(chip, f"2 on a {status} chip")]


def test_more_active_chips_than_producao_max_are_reported(clean_db: sa.Engine) -> None:
    # Given producao_max 2 and three active chips
    set_config(clean_db, producao_min=1, producao_max=2)
    for _ in range(3):
        make_chip(clean_db, "active")
    # Then the pool is reported above its maximum
    found = checker.find_violations(clean_db)
    assert [(v.kind, v.chip_id) for v in found] == [("active_above_max", None)]
    assert "3 active > producao_max 2" in found[0].detail


def test_a_degraded_chip_without_its_replacement_row_is_reported(clean_db: sa.Engine) -> None:
    # Given a chip flipped to degraded by a raw UPDATE, with no operations row
    chip = make_chip(clean_db, "active")
    with clean_db.begin() as conn:
        conn.execute(sa.text("UPDATE chips SET status = 'degraded' WHERE id = :id"), {"id": chip})
    # Then the missing operation is reported
    found = checker.find_violations(clean_db)
    assert [(v.kind, v.chip_id) for v in found] == [("missing_operation", chip)]


def test_a_cancelled_chip_without_a_cancel_row_is_reported(clean_db: sa.Engine) -> None:
    # Given a cancelled chip with no cancel (or failed purchase) row
    make_chip(clean_db, "cancelled")
    # Then it is reported
    assert kinds(clean_db) == ["missing_operation"]


def test_a_bought_chip_made_ready_without_a_promotion_row_is_reported(clean_db: sa.Engine) -> None:
    # Given a chip we bought (auto_provision row) that turned ready with no promotion row
    chip = make_chip(clean_db, "ready", provisioning_name=f"chiporch-{uuid.uuid4()}")
    op(clean_db, "auto_provision", chip, metadata=json.dumps({"name": "x", "salvy_id": "s1"}))
    # Then it is reported; a ready chip inserted by another service (no history) is not
    make_chip(clean_db, "ready")
    found = checker.find_violations(clean_db)
    assert [(v.kind, v.chip_id) for v in found] == [("missing_operation", chip)]


def test_a_provisioning_intent_past_its_deadline_and_grace_is_reported(
    clean_db: sa.Engine,
) -> None:
    # Given one intent past deadline + grace and one only just past its deadline
    with clean_db.begin() as conn:
        for minutes in (60, 1):
            conn.execute(
                sa.text(
                    "INSERT INTO chips (status, provisioning_name, provisioning_deadline)"
                    " VALUES ('provisioning', :name, now() - make_interval(mins => :m))"
                ),
                {"name": f"chiporch-{uuid.uuid4()}", "m": minutes},
            )
    # Then only the first is reported
    assert kinds(clean_db) == ["provisioning_overdue"]


def test_one_intent_completed_twice_is_reported_as_bought_twice(clean_db: sa.Engine) -> None:
    # Given one provisioning intent with two successful auto_provision rows
    chip = make_chip(clean_db, "warming", provisioning_name="chiporch-dup")
    for salvy_id in ("s-1", "s-2"):
        meta = json.dumps({"name": "chiporch-dup", "salvy_id": salvy_id})
        op(clean_db, "auto_provision", chip, metadata=meta)
    # Then it is reported as bought twice
    found = checker.find_violations(clean_db)
    assert [(v.kind, v.chip_id) for v in found] == [("bought_twice", chip)]


def test_one_name_bought_for_two_chips_is_reported(clean_db: sa.Engine) -> None:
    # Given two chips whose purchases carry the same Salvy name
    meta = json.dumps({"name": "chiporch-same"})
    for _ in range(2):
        chip = make_chip(clean_db, "warming")
        op(clean_db, "auto_provision", chip, metadata=meta)
    # Then the duplicated name is reported
    found = checker.find_violations(clean_db)
    assert [v.kind for v in found] == ["bought_twice"]
    assert "chiporch-same" in found[0].detail


def test_an_outbox_message_undelivered_past_its_deadline_is_reported(
    clean_db: sa.Engine,
) -> None:
    # Given an old undelivered message, a fresh one and an old delivered one
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO notification_outbox (canal, texto, created_at, delivered_at) VALUES"
                " ('alertas', 'velha', now() - interval '1 hour', NULL),"
                " ('alertas', 'nova', now(), NULL),"
                " ('operacoes', 'entregue', now() - interval '1 hour', now())"
            )
        )
    # Then only the old undelivered one is reported
    found = checker.find_violations(clean_db)
    assert [v.kind for v in found] == ["outbox_stale"]


def test_main_prints_json_and_exits_one_on_violations(
    clean_db: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a clean pool, then one violation
    assert checker.main(clean_db, as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == []
    make_chip(clean_db, "cancelled")
    # When main runs with --json
    code = checker.main(clean_db, as_json=True)
    # Then it exits 1 and lists the violation
    assert code == 1
    assert json.loads(capsys.readouterr().out)[0]["kind"] == "missing_operation"
