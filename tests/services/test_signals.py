"""Gateway signals applied in the database; flapping counted by the trigger, planned and rechecked."""

from __future__ import annotations

import sqlalchemy as sa

from orchestrator.domain.signals import BANNED, DISCONNECTED, GatewaySignal
from orchestrator.services import cycle, replacement
from orchestrator.services.signals import apply_gateway_signal
from orchestrator.store.schema import chip_disconnect_events, operations
from tests.factories import chip_row, make_chip, set_config


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
