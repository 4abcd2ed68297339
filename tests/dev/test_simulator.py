"""The simulator (the services around the orchestrator) and the demo seed, on real PostgreSQL."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
import sqlalchemy as sa

from orchestrator.dev import demo_seed, simulator
from orchestrator.ops import checker
from orchestrator.services import forecast
from orchestrator.services.promote import promote_warming_to_ready
from orchestrator.store.schema import chips, conversation_chips, pool_config
from tests.factories import add_conversations, chip_row, make_chip, set_config

pytestmark = pytest.mark.db

#: Rough weather: every kind of change happens within a few steps.
STORMY = simulator.Knobs(
    ban_rate=0.2, disconnect_rate=0.3, reconnect_rate=0.3, trust_crash_rate=0.2, arrivals=5
)


class Sent(list):
    """Records send(task, args, kwargs) calls instead of a broker."""

    def __call__(self, name: str, args: list, kwargs: dict) -> None:
        self.append((name, args, kwargs))


def snapshot(engine: sa.Engine) -> dict[str, sa.RowMapping]:
    with engine.connect() as conn:
        return {str(r["id"]): r for r in conn.execute(sa.select(chips)).mappings()}


def open_conversations(engine: sa.Engine) -> dict[str, str]:
    """conversation_id -> chip_id of every active conversation."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(conversation_chips.c.conversation_id, conversation_chips.c.chip_id).where(
                conversation_chips.c.active
            )
        )
        return {c: str(chip) for c, chip in rows}


def test_the_demo_seed_fills_an_empty_pool_with_every_state_and_open_conversations(
    clean_db: sa.Engine,
) -> None:
    # Given an empty pool
    # When the demo seeds it
    written = demo_seed.seed_demo_pool(clean_db, random.Random(1))
    # Then chips exist in every lifecycle state the demo shows, active ones serve conversations
    statuses = {r["status"] for r in snapshot(clean_db).values()}
    assert written == len(demo_seed.DEMO_CHIPS)
    assert {"warming", "ready", "active", "degraded", "banned", "cancelled"} <= statuses
    assert len(open_conversations(clean_db)) > 0
    with clean_db.connect() as conn:
        config = conn.execute(sa.select(pool_config)).mappings().one()
    assert (config["producao_min"], config["producao_max"]) == (6, 8)


def test_the_demo_seed_breaks_no_invariant(clean_db: sa.Engine) -> None:
    # Given the demo pool, with the history of its degraded, banned and cancelled chips
    demo_seed.seed_demo_pool(clean_db, random.Random(9))
    # Then `chip-orchestrator check` would find nothing to report
    assert checker.find_violations(clean_db) == []


def test_the_demo_seed_never_touches_a_pool_that_has_chips(clean_db: sa.Engine) -> None:
    # Given a pool with one chip
    only = make_chip(clean_db, "active")
    # When the demo tries to seed it
    written = demo_seed.seed_demo_pool(clean_db, random.Random(2))
    # Then nothing was written: the run resumes the existing pool
    assert written == 0
    assert list(snapshot(clean_db)) == [only]


def test_a_step_changes_the_pool_in_a_plausible_way(clean_db: sa.Engine) -> None:
    # Given the demo pool
    demo_seed.seed_demo_pool(clean_db, random.Random(3))
    before = snapshot(clean_db)
    sent = Sent()
    # When the simulator runs a few stormy steps
    events = [e for _ in range(5) for e in simulator.step(clean_db, random.Random(4), sent, STORMY)]
    # Then it reports what it did, and trust scores moved
    after = snapshot(clean_db)
    assert events
    assert any(before[i]["trust_score"] != after[i]["trust_score"] for i in before)


def test_a_banned_chip_is_reported_to_the_orchestrator_by_task_name(clean_db: sa.Engine) -> None:
    # Given active chips with conversations
    active = [make_chip(clean_db, "active") for _ in range(4)]
    sent = Sent()
    # When WhatsApp bans every active chip it looks at
    knobs = simulator.Knobs(ban_rate=1.0, disconnect_rate=0, arrivals=0)
    events = simulator.step(clean_db, random.Random(5), sent, knobs)
    # Then each is marked banned and a replace_chip(reason=banned) was sent for each
    assert {chip_row(clean_db, c).status for c in active} == {"banned"}
    assert sorted(args[0] for _, args, _ in sent) == sorted(active)
    assert {(name, kw["reason"]) for name, _, kw in sent} == {
        ("orchestrator.replace_chip", "banned")
    }
    assert sum("banido" in e for e in events) == 4


def test_an_outage_disconnects_most_active_chips_and_reconnects_none(clean_db: sa.Engine) -> None:
    # Given ten connected active chips and one already disconnected
    for _ in range(10):
        make_chip(clean_db, "active")
    offline = make_chip(clean_db, "active", evolution_connected=False)
    # When the gateway has an outage
    knobs = simulator.Knobs(outage=True, ban_rate=0, arrivals=0, reconnect_rate=1.0)
    simulator.step(clean_db, random.Random(6), Sent(), knobs)
    # Then most are disconnected (the database recorded since when) and none came back
    rows = snapshot(clean_db).values()
    down = [r for r in rows if not r["evolution_connected"]]
    assert len(down) > 6
    assert all(r["evolution_disconnected_at"] is not None for r in down)
    assert chip_row(clean_db, offline).evolution_connected is False


def test_the_warm_up_time_lapse_brings_a_chip_to_operacao(clean_db: sa.Engine) -> None:
    # Given a chip that just started warming, warm-up of 21 days
    set_config(clean_db, warmup_days=21)
    chip = make_chip(clean_db, "warming", trust=40, fase_warmup="setup", warming_started_at=None)
    with clean_db.begin() as conn:
        conn.execute(
            sa.update(chips).where(chips.c.id == chip).values(warming_started_at=sa.func.now())
        )
    # When eleven simulated steps pass two warm-up days each
    knobs = simulator.Knobs(warmup_days_per_step=2.0, ban_rate=0, arrivals=0)
    for seed in range(11):
        simulator.step(clean_db, random.Random(seed), Sent(), knobs)
    # Then it reached the last phase, warmed for 22 days, and gained trust
    row = chip_row(clean_db, chip)
    assert row.fase_warmup == "operacao"
    assert row.status == "warming"  # promotion is the orchestrator's job, not the simulator's
    assert row.trust_score > 40


def test_the_time_lapse_ages_the_purchase_with_the_warm_up_so_the_lead_time_is_measured(
    clean_db: sa.Engine,
) -> None:
    # Given a number just bought (created_at and warming_started_at now, as a purchase writes)
    set_config(clean_db, warmup_days=21)
    chip = make_chip(clean_db, "warming", trust=95, fase_warmup="setup", warming_started_at=None)
    with clean_db.begin() as conn:
        conn.execute(
            sa.update(chips)
            .where(chips.c.id == chip)
            .values(warming_started_at=sa.func.now(), created_at=sa.func.now())
        )
    # When the demo's time-lapse passes eleven steps of two warm-up days, and the
    # orchestrator promotes the chip
    knobs = simulator.Knobs(warmup_days_per_step=2.0, ban_rate=0, arrivals=0, trust_drift=0)
    for seed in range(11):
        simulator.step(clean_db, random.Random(seed), Sent(), knobs)
    row = chip_row(clean_db, chip)
    # Then the purchase aged with the warm-up: bought when it started warming, 22 days ago
    assert row.created_at == row.warming_started_at
    assert promote_warming_to_ready(clean_db, chip)["status"] == "promoted"
    # And the forecast measures a warm-up's lead time from purchase to ready, not ~0 days
    measured = forecast.forecast(clean_db, window_days=60)
    assert measured["lead_time_samples"] == 1
    assert 22 <= measured["lead_time_days"] < 22.1


def test_the_demo_seeds_chips_bought_when_their_warm_up_started(clean_db: sa.Engine) -> None:
    # Given the demo pool (its eligible warming chip warmed for 22 days)
    demo_seed.seed_demo_pool(clean_db, random.Random(1))
    rows = snapshot(clean_db).values()
    # Then every chip was bought when its warm-up started, never after
    assert all(r["created_at"] == r["warming_started_at"] for r in rows)
    # And promoting the eligible one gives the forecast a lead time of 22 days
    (eligible,) = [
        str(r["id"]) for r in rows if r["status"] == "warming" and r["trust_score"] == 90
    ]
    assert promote_warming_to_ready(clean_db, eligible)["status"] == "promoted"
    assert 22 <= forecast.forecast(clean_db, window_days=60)["lead_time_days"] < 22.1


def test_the_phase_follows_the_share_of_warm_up_done() -> None:
    assert simulator.phase_for(None, 21) == "setup"
    assert simulator.phase_for(timedelta(days=0), 21) == "setup"
    assert simulator.phase_for(timedelta(days=11), 21) == "expansao"
    assert simulator.phase_for(timedelta(days=20, hours=23), 21) == "pre_operacao"
    assert simulator.phase_for(timedelta(days=21), 21) == "operacao"


def test_many_stormy_steps_never_write_an_invalid_state(clean_db: sa.Engine) -> None:
    # Given the demo pool
    demo_seed.seed_demo_pool(clean_db, random.Random(7))
    before = snapshot(clean_db)
    sent = Sent()
    # When forty stormy steps run
    rng = random.Random(8)
    for _ in range(40):
        simulator.step(clean_db, rng, sent, STORMY)
    after = snapshot(clean_db)
    banned_now = {i for i, r in after.items() if before[i]["status"] != r["status"]}
    # Then the only status change is active -> banned, each one reported by task
    assert {(before[i]["status"], after[i]["status"]) for i in banned_now} <= {("active", "banned")}
    assert {args[0] for _, args, _ in sent} == banned_now
    # And trust stays in 0..100, phases are known ones, only warming chips changed phase
    assert all(0 <= r["trust_score"] <= 100 for r in after.values())
    assert {r["fase_warmup"] for r in after.values()} <= set(simulator.PHASES)
    changed_phase = {i for i in after if after[i]["fase_warmup"] != before[i]["fase_warmup"]}
    assert all(after[i]["status"] == "warming" for i in changed_phase)
    # And open conversations sit only on active chips, or on chips banned by this run
    assert (
        set(open_conversations(clean_db).values())
        <= {i for i, r in after.items() if r["status"] == "active"} | banned_now
    )


def test_new_conversations_only_land_on_connected_active_chips(clean_db: sa.Engine) -> None:
    # Given one connected active chip, one disconnected active chip and a ready chip
    target = make_chip(clean_db, "active")
    offline = make_chip(clean_db, "active", evolution_connected=False)
    make_chip(clean_db, "ready")
    add_conversations(clean_db, offline, 1)
    # When many conversations arrive and none close
    knobs = simulator.Knobs(
        arrivals=5, close_rate=0, ban_rate=0, disconnect_rate=0, reconnect_rate=0
    )
    for seed in range(10):
        simulator.step(clean_db, random.Random(seed), Sent(), knobs)
    # Then every new one is on the connected active chip
    by_chip = list(open_conversations(clean_db).values())
    assert by_chip.count(offline) == 1
    assert by_chip.count(target) == len(by_chip) - 1 > 0
