"""Pure pool decisions, at their edges."""

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.domain.pool import (
    BANNED,
    DISCONNECTED,
    LOW_TRUST,
    ChipView,
    Counts,
    PoolConfig,
    PurchaseGate,
    Snapshot,
    backoff_minutes,
    deficits,
    degraded_reason,
    health,
    is_fit_to_serve,
    is_ready_eligible,
    is_storm,
    plan_cycle,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CONFIG = PoolConfig(producao_min=4, producao_max=6, ready_min=2, warmup_buffer=4)


def active(
    chip_id: str = "a", trust: float = 90, disconnected_for: timedelta | None = None
) -> ChipView:
    return ChipView(
        id=chip_id,
        status="active",
        trust_score=trust,
        evolution_connected=disconnected_for is None,
        evolution_disconnected_at=None if disconnected_for is None else NOW - disconnected_for,
    )


def ready(chip_id: str = "r", trust: float = 90, connected: bool = True) -> ChipView:
    return ChipView(id=chip_id, status="ready", trust_score=trust, evolution_connected=connected)


def warming(
    chip_id: str = "w",
    trust: float = 90,
    days: timedelta = timedelta(days=21),
    fase: str = "operacao",
) -> ChipView:
    return ChipView(
        id=chip_id,
        status="warming",
        trust_score=trust,
        fase_warmup=fase,
        warming_started_at=NOW - days,
    )


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (Counts(active=3, ready=5, warming=9), "critico"),
        (Counts(active=0), "critico"),
        (Counts(), "critico"),
        (Counts(active=4, ready=1, warming=9), "atencao"),
        (Counts(active=4, ready=2, warming=1), "atencao"),
        (Counts(active=4, ready=2, warming=2), "saudavel"),
    ],
)
def test_health_follows_the_seed(counts: Counts, expected: str) -> None:
    assert health(CONFIG, counts) == expected


def test_numbers_being_bought_count_toward_the_warming_buffer() -> None:
    assert deficits(CONFIG, Counts(warming=1, provisioning=2)).warming == 1
    assert deficits(CONFIG, Counts(warming=1, provisioning=5)).warming == 0


def test_deficits_are_never_negative() -> None:
    d = deficits(CONFIG, Counts(active=50, ready=50, warming=50))
    assert (d.producao, d.ready, d.warming) == (0, 0, 0)


def test_trust_exactly_at_the_threshold_is_not_degraded() -> None:
    assert degraded_reason(active(trust=60), CONFIG, NOW) is None
    assert degraded_reason(active(trust=59.9), CONFIG, NOW) == LOW_TRUST


def test_disconnection_counts_only_after_the_full_grace_period() -> None:
    almost = timedelta(minutes=30) - timedelta(seconds=1)
    assert degraded_reason(active(disconnected_for=almost), CONFIG, NOW) is None
    assert (
        degraded_reason(active(disconnected_for=timedelta(minutes=30)), CONFIG, NOW) == DISCONNECTED
    )


def test_a_banned_chip_is_replaced_once() -> None:
    banned = ChipView(id="b", status="banned", trust_score=90)
    assert degraded_reason(banned, CONFIG, NOW) == BANNED
    handled = ChipView(id="b", status="banned", trust_score=90, degraded_at=NOW)
    assert degraded_reason(handled, CONFIG, NOW) is None


def test_low_trust_wins_over_disconnection() -> None:
    chip = active(trust=10, disconnected_for=timedelta(hours=2))
    assert degraded_reason(chip, CONFIG, NOW) == LOW_TRUST


def test_warming_is_eligible_at_exactly_warmup_days() -> None:
    assert is_ready_eligible(warming(days=timedelta(days=21)), CONFIG, NOW)
    assert not is_ready_eligible(
        warming(days=timedelta(days=21) - timedelta(seconds=1)), CONFIG, NOW
    )


@pytest.mark.parametrize(
    "chip",
    [
        warming(trust=84.9),
        warming(fase="primeiros_contatos"),
        ChipView(id="x", status="warming", trust_score=99, fase_warmup="operacao"),
    ],
)
def test_warming_needs_trust_phase_and_start_date(chip: ChipView) -> None:
    assert not is_ready_eligible(chip, CONFIG, NOW)


def test_storm_brake_needs_more_than_the_fraction() -> None:
    assert not is_storm(CONFIG, active=10, disconnected=5)
    assert is_storm(CONFIG, active=10, disconnected=6)
    assert not is_storm(CONFIG, active=0, disconnected=0)


def snapshot(**kw: object) -> Snapshot:
    base = {"config": CONFIG, "counts": Counts(active=4, ready=2, warming=4), "now": NOW}
    return Snapshot(**{**base, **kw})


def test_everything_disconnected_at_once_holds_all_disconnection_replacements() -> None:
    long = timedelta(hours=1)
    serving = [active(f"a{i}", disconnected_for=long) for i in range(4)] + [
        active("low", trust=5, disconnected_for=long)
    ]
    plan = plan_cycle(snapshot(counts=Counts(active=5, ready=2, warming=4), serving=serving))
    assert plan.storm
    assert [r.chip_id for r in plan.replace] == ["low"]
    assert plan.held_for_storm == ("a0", "a1", "a2", "a3")


def test_a_few_disconnected_chips_are_replaced() -> None:
    plan = plan_cycle(snapshot(serving=[active("a", disconnected_for=timedelta(hours=1))]))
    assert not plan.storm
    assert plan.replace[0].reason == DISCONNECTED


def test_promotions_to_active_fill_the_gap_but_skip_ready_chips_that_replacements_take() -> None:
    banned = ChipView(id="b", status="banned", trust_score=90)
    plan = plan_cycle(
        snapshot(
            counts=Counts(active=1, ready=5, warming=4),
            serving=[banned],
            ready_ranked=[ready(f"r{i}") for i in range(1, 6)],
        )
    )
    # min 4, active 1, one ban refilled by r1 -> two more promotions, from r2 on
    assert plan.promote_active == ("r2", "r3")


def test_promotions_never_exceed_producao_max() -> None:
    config = PoolConfig(producao_min=6, producao_max=6)
    plan = plan_cycle(
        snapshot(
            config=config, counts=Counts(active=6, ready=3), ready_ranked=[ready("r1"), ready("r2")]
        )
    )
    assert plan.promote_active == ()


def test_provisioning_is_capped_per_cycle_and_counts_in_flight() -> None:
    # ready at ready_min (3): the reserve rule is the seed's warming deficit
    config = PoolConfig(warmup_buffer=10, max_provisions_per_cycle=3)
    held = {"ready": 3}
    assert plan_cycle(snapshot(config=config, counts=Counts(warming=2, **held))).provision == 3
    in_flight = Counts(warming=2, provisioning=7, **held)
    assert plan_cycle(snapshot(config=config, counts=in_flight)).provision == 1
    full = Counts(warming=2, provisioning=8, **held)
    assert plan_cycle(snapshot(config=config, counts=full)).provision == 0


def test_auto_provision_off_buys_nothing() -> None:
    config = PoolConfig(auto_provision=False)
    assert plan_cycle(snapshot(config=config, counts=Counts())).provision == 0


def test_an_empty_pool_is_critical_and_buys_numbers() -> None:
    plan = plan_cycle(snapshot(counts=Counts()))
    assert plan.health == "critico"
    assert plan.provision == 3
    assert plan.replace == () and plan.promote_active == ()


def test_cancellation_of_banned_chips_only_when_configured() -> None:
    assert plan_cycle(snapshot(cancellable=["b"])).cancel == ()
    config = PoolConfig(producao_min=4, producao_max=6, auto_cancel_banned=True)
    assert plan_cycle(snapshot(config=config, cancellable=["b"])).cancel == ("b",)


def test_eligible_warming_chips_are_promoted() -> None:
    plan = plan_cycle(snapshot(warming=[warming("w1"), warming("w2", trust=10)]))
    assert plan.promote_ready == ("w1",)


def test_a_sane_config_has_no_problems_and_a_nonsensical_one_lists_them() -> None:
    assert PoolConfig().problems() == []
    bad = PoolConfig(producao_min=5, producao_max=2, ready_min=-1, trust_min_for_ready=120)
    assert bad.problems() == [
        "ready_min is negative",
        "producao_min exceeds producao_max",
        "trust_min_for_ready outside 0..100",
    ]


def test_chips_left_holding_conversations_are_migrated_unless_replaced_this_cycle() -> None:
    # Given two stranded chips, one of them a banned chip the cycle replaces (with its rows)
    banned = ChipView(id="b", status="banned", trust_score=90)
    plan = plan_cycle(snapshot(serving=[banned], stranded=["d", "b"], ready_ranked=[ready("r1")]))
    # Then the other is migrated, and the banned one is left to its replacement
    assert plan.migrate == ("d",)
    assert [r.chip_id for r in plan.replace] == ["b"]


def test_a_banned_chip_still_holding_conversations_is_not_cancelled_yet() -> None:
    config = PoolConfig(producao_min=4, producao_max=6, auto_cancel_banned=True)
    plan = plan_cycle(snapshot(config=config, cancellable=["b1", "b2"], stranded=["b2"]))
    assert (plan.cancel, plan.migrate) == (("b1",), ("b2",))


@pytest.mark.parametrize(
    ("chip", "fit"),
    [
        (ready(trust=85), True),  # exactly trust_min_for_ready
        (ready(trust=84.9), False),
        (ready(trust=100, connected=False), False),
        (active(trust=90), True),
        (active(trust=90, disconnected_for=timedelta(minutes=1)), False),  # no grace to serve
    ],
)
def test_fit_to_serve_means_connected_and_trusted_enough_for_ready(
    chip: ChipView, fit: bool
) -> None:
    assert is_fit_to_serve(chip, CONFIG) is fit


def test_the_plan_never_promotes_a_ready_chip_unfit_to_serve() -> None:
    ranked = [ready("offline", trust=99, connected=False), ready("low", trust=80), ready("ok")]
    plan = plan_cycle(snapshot(counts=Counts(active=3, ready=3, warming=4), ready_ranked=ranked))
    assert plan.promote_active == ("ok",)


def test_replacements_take_the_first_fit_ready_chips_and_promotions_the_rest() -> None:
    banned = ChipView(id="b", status="banned", trust_score=90)
    ranked = [ready("offline", trust=99, connected=False), ready("r1"), ready("r2")]
    plan = plan_cycle(
        snapshot(counts=Counts(active=2, ready=3, warming=4), serving=[banned], ready_ranked=ranked)
    )
    assert plan.promote_active == ("r2",)


def test_purchases_wait_out_a_back_off_then_probe_one_at_a_time() -> None:
    empty = Counts()
    paused = PurchaseGate(paused_until=NOW + timedelta(minutes=2), cause="out_of_stock", failures=2)
    over = PurchaseGate(paused_until=NOW - timedelta(seconds=1), cause="out_of_stock", failures=2)
    # While paused: nothing; once the pause is over: one probe; after a success: full speed
    assert plan_cycle(snapshot(counts=empty, purchase_gate=paused)).provision == 0
    assert plan_cycle(snapshot(counts=empty, purchase_gate=over)).provision == 1
    assert plan_cycle(snapshot(counts=empty, purchase_gate=PurchaseGate())).provision == 3
    # And the plan says why it holds back
    assert plan_cycle(snapshot(counts=empty, purchase_gate=paused)).purchase_gate == paused


def test_without_salvy_nothing_is_bought() -> None:
    gate = PurchaseGate(salvy_configured=False)
    assert plan_cycle(snapshot(counts=Counts(), purchase_gate=gate)).provision == 0


def test_the_back_off_doubles_from_one_minute_up_to_thirty() -> None:
    assert [backoff_minutes(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff_minutes(10_000) == 30
