"""Gateway signals applied in the database; flapping counted by the trigger, planned and rechecked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from orchestrator.domain.signals import BANNED, CONNECTED, DISCONNECTED, GatewaySignal
from orchestrator.services import cycle, replacement
from orchestrator.services.signals import apply_gateway_signal
from orchestrator.store import repository as repo
from orchestrator.store.schema import chip_disconnect_events, operations
from tests.factories import add_conversations, chip_row, make_chip, set_config

#: A Sao Paulo server's wall clock, labelled Z: 3 h behind UTC.
SAO_PAULO = timedelta(hours=3)


def _kinds(engine: sa.Engine, chip_id: str) -> list[str]:
    with engine.connect() as conn:
        stmt = sa.select(operations.c.operacao).where(operations.c.chip_id == chip_id)
        return list(conn.execute(stmt.order_by(operations.c.created_at)).scalars())


def _flap(engine: sa.Engine, chip_id: str, times: int) -> None:
    """Another service drops and restores the chip's connection with plain UPDATEs."""
    with engine.begin() as conn:
        for _ in range(times):
            for connected in (False, True):
                conn.execute(
                    sa.text("UPDATE chips SET evolution_connected = :c WHERE id = :id"),
                    {"c": connected, "id": chip_id},
                )


def test_a_ban_of_a_chip_not_yet_serving_marks_it_banned_with_no_replacement(
    clean_db: sa.Engine,
) -> None:
    chip = make_chip(clean_db, "ready", instance_name="ready-1")
    result = apply_gateway_signal(
        clean_db, GatewaySignal("connection.update", "ready-1", BANNED, 403)
    )
    assert result["replace"] is None
    row = chip_row(clean_db, chip)
    assert (row.status, row.evolution_connected) == ("banned", False)
    assert row.degraded_at is not None  # handled: the cycle does not "replace" it
    again = apply_gateway_signal(
        clean_db, GatewaySignal("connection.update", "ready-1", BANNED, 403)
    )
    assert again["replace"] is None
    with clean_db.connect() as conn:
        kinds = list(
            conn.execute(
                sa.select(operations.c.operacao).where(operations.c.chip_id == chip)
            ).scalars()
        )
    assert kinds == ["demotion"]


def test_an_instance_name_reused_by_a_newer_chip_reaches_the_one_in_service(
    clean_db: sa.Engine,
) -> None:
    make_chip(clean_db, "cancelled", instance_name="reused")
    live = make_chip(clean_db, "active", instance_name="reused")
    result = apply_gateway_signal(
        clean_db, GatewaySignal("connection.update", "reused", DISCONNECTED, 428)
    )
    assert result["chip_id"] == live


def test_the_cycle_plans_flapping_chips_from_drops_other_services_wrote(
    clean_db: sa.Engine,
) -> None:
    set_config(clean_db, flap_max_per_hour=3, producao_min=1)
    steady = [make_chip(clean_db, "active") for _ in range(4)]
    flappy = make_chip(clean_db, "active")
    _flap(clean_db, flappy, 3)
    _flap(clean_db, steady[0], 2)
    make_chip(clean_db, "ready", trust=95)
    the_plan, _, _ = cycle.plan(clean_db, salvy_configured=False)
    assert [(r.chip_id, r.reason) for r in the_plan.replace] == [(flappy, "flapping")]
    set_config(clean_db, flap_max_per_hour=0)
    the_plan, _, _ = cycle.plan(clean_db, salvy_configured=False)
    assert the_plan.replace == ()


def test_the_storm_brake_holds_flapping_replacements(clean_db: sa.Engine) -> None:
    # Given three of four active chips flapping at once: the gateway is the likelier culprit
    set_config(clean_db, flap_max_per_hour=2, producao_min=1)
    chips = [make_chip(clean_db, "active") for _ in range(4)]
    for chip in chips[:3]:
        _flap(clean_db, chip, 2)
    make_chip(clean_db, "ready", trust=95)
    # Then the plan holds them, and a replace sent anyway is skipped under the row lock
    the_plan, _, _ = cycle.plan(clean_db, salvy_configured=False)
    assert the_plan.replace == () and sorted(the_plan.held_for_storm) == sorted(chips[:3])
    result = replacement.replace_chip(clean_db, chips[0], "flapping")
    assert result == {"status": "skipped", "chip_id": chips[0], "reason": "storm"}


def test_a_flapping_replace_for_a_chip_that_calmed_down_is_skipped(clean_db: sa.Engine) -> None:
    set_config(clean_db, flap_max_per_hour=2)
    chip = make_chip(clean_db, "active")
    for _ in range(3):
        make_chip(clean_db, "active")
    _flap(clean_db, chip, 2)
    with clean_db.begin() as conn:  # the drops were more than an hour ago
        conn.execute(
            sa.text("UPDATE chip_disconnect_events SET at = now() - interval '61 minutes'")
        )
    result = replacement.replace_chip(clean_db, chip, "flapping")
    assert result["status"] == "skipped" and result["reason"] == "recovered"


def test_the_cycle_prunes_drops_older_than_two_hours(clean_db: sa.Engine) -> None:
    chip = make_chip(clean_db, "active")
    _flap(clean_db, chip, 3)
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE chip_disconnect_events SET at = now() - interval '3 hours'"
                " WHERE id = (SELECT min(id) FROM chip_disconnect_events)"
            )
        )
    assert cycle.tidy(clean_db, cycle.Sweep())["drops_pruned"] == 1
    with clean_db.connect() as conn:
        assert (
            conn.execute(
                sa.select(sa.func.count()).select_from(chip_disconnect_events)
            ).scalar_one()
            == 2
        )


def test_a_ban_of_an_active_chip_is_written_banned_before_any_task_and_never_stale(
    clean_db: sa.Engine,
) -> None:
    # Given an active chip whose last event (`open`) carried no date_time
    chip = make_chip(clean_db, "active", instance_name="sp-1")
    add_conversations(clean_db, chip, 2)
    opened = apply_gateway_signal(clean_db, GatewaySignal("connection.update", "sp-1", CONNECTED))
    assert opened["status"] == "accepted"
    # When a 403 arrives dated by a Sao Paulo server (3 h behind UTC)
    ban = GatewaySignal("connection.update", "sp-1", BANNED, 403, datetime.now(UTC) - SAO_PAULO)
    result = apply_gateway_signal(clean_db, ban)
    # Then it is accepted and the chip is banned in that transaction, not yet handled
    assert (result["status"], result["replace"]) == ("accepted", "banned")
    row = chip_row(clean_db, chip)
    assert (row.status, row.degraded_at, row.evolution_connected) == ("banned", None, False)
    assert _kinds(clean_db, chip) == ["demotion"]
    # And an older ban delivered late still asks for the replacement, recording nothing twice
    older = GatewaySignal("connection.update", "sp-1", BANNED, 403, ban.at - timedelta(minutes=1))
    assert apply_gateway_signal(clean_db, older)["replace"] == "banned"
    assert _kinds(clean_db, chip) == ["demotion"]


def test_a_ban_whose_task_was_never_sent_is_replaced_by_the_next_cycle(
    clean_db: sa.Engine,
) -> None:
    # Given a ban recorded (its replace_chip never published) and a newer `open` after it
    set_config(clean_db, producao_min=1)
    chip = make_chip(clean_db, "active", instance_name="lost-1")
    add_conversations(clean_db, chip, 3)
    ready = make_chip(clean_db, "ready", trust=97)
    apply_gateway_signal(clean_db, GatewaySignal("connection.update", "lost-1", BANNED, 403))
    reopened = apply_gateway_signal(
        clean_db, GatewaySignal("connection.update", "lost-1", CONNECTED)
    )
    assert reopened["status"] == "accepted" and chip_row(clean_db, chip).status == "banned"
    # When the next cycle plans
    the_plan, _, _ = cycle.plan(clean_db, salvy_configured=False)
    # Then it replaces the banned chip, and the replacement takes its conversations
    assert [(r.chip_id, r.reason) for r in the_plan.replace] == [(chip, "banned")]
    done = replacement.replace_chip(clean_db, chip, "banned")
    assert (done["status"], done["replacement_id"], done["conversas_migradas"]) == (
        "replaced",
        ready,
        3,
    )
    assert chip_row(clean_db, chip).status == "banned"
    the_plan, _, _ = cycle.plan(clean_db, salvy_configured=False)
    assert the_plan.replace == ()


def test_a_gateway_ban_counts_once_as_demand_and_a_warming_chips_ban_never(
    clean_db: sa.Engine,
) -> None:
    # Demand is ready chips consumed: the active chip's replacement, not the ban's own record
    active = make_chip(clean_db, "active", instance_name="dem-1")
    warming = make_chip(clean_db, "warming", instance_name="dem-2")
    make_chip(clean_db, "ready", trust=97)
    since = datetime.now(UTC) - timedelta(minutes=1)
    for name in ("dem-1", "dem-2"):
        apply_gateway_signal(clean_db, GatewaySignal("connection.update", name, BANNED, 406))
    replacement.replace_chip(clean_db, active, "banned")
    assert chip_row(clean_db, warming).status == "banned"
    with clean_db.connect() as conn:
        assert repo.replacements_by_reason(conn, since) == {"banned": 1}
