"""The cycle's read side: the pool status, one snapshot of the pool, the plan, the pool alerts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from orchestrator.domain import messages, release
from orchestrator.domain.forecast import auto_size_view
from orchestrator.domain.pool import Plan, PoolConfig, Snapshot, plan_cycle, reserve_target
from orchestrator.domain.status import status_from
from orchestrator.errors import ConfigError
from orchestrator.services import backoff, forecast
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction

#: Stranded chips handed to migrate_conversations per cycle; the next cycle takes the rest.
MAX_STRANDED_PER_CYCLE = 500
#: Stranded-chip notes read per cycle (oldest first); the next cycle reads the rest.
MAX_NOTES_PER_CYCLE = 10_000
#: The backstop reads the open rows of one slice of chip ids per cycle and looks up the chips
#: holding them, a slice holding the rows of about this many active chips (a few ms, most of it
#: chip pages read from disk cache). The slices are read in rotation (backstop_cursor), so what
#: the triggers could not note (they were bypassed) is found within active /
#: BACKSTOP_ACTIVE_PER_SLICE cycles (about 3 hours at 100k active chips and a 60 s period), at a
#: cost per cycle that stays flat as the pool grows.
BACKSTOP_ACTIVE_PER_SLICE = 512
#: Alert keys for pool-level alerts (cool-down per key).
CRITICAL_KEY, STORM_KEY, CONFIG_KEY = "pool:critico", "pool:storm", "pool:config"


@dataclass(frozen=True)
class Sweep:
    """What the cycle tidies after planning (tidy): stranded-chip notes whose chip held no
    stranded row in the snapshot, stranded chips the backstop found without a note, and the
    backstop's rotation to move on."""

    settle: tuple[tuple[int, str], ...] = ()
    unnoted: tuple[str, ...] = ()
    backstop_at: int | None = None  # the rotation's position this cycle read; tidy moves it on


def backstop_slices(active: int) -> int:
    """How many slices the chip ids are cut into for the backstop (1 for a small pool)."""
    return max(1, active // BACKSTOP_ACTIVE_PER_SLICE)


def _stranded(conn: sa.Connection, active: int) -> tuple[list[str], Sweep]:
    """Noted chips holding stranded rows, plus what the backstop finds in the slice the rotation
    is at (consecutive cycles read consecutive slices: every one within `slices` cycles)."""
    noted, settle = repo.noted_stranded(conn, MAX_NOTES_PER_CYCLE)
    slices = backstop_slices(active)
    at = repo.backstop_position(conn)
    found = repo.stranded_in_range(conn, MAX_STRANDED_PER_CYCLE, at % slices, slices)
    unnoted = sorted(set(found) - set(noted))
    stranded = sorted(set(noted) | set(found))[:MAX_STRANDED_PER_CYCLE]
    return stranded, Sweep(tuple(settle), tuple(unnoted), at)


def take_snapshot(
    conn: sa.Connection,
    *,
    salvy_configured: bool = True,
    trust: bool = True,
    measure: forecast.Measure | None = None,
    now: datetime | None = None,
) -> tuple[Snapshot, float | None, Sweep, dict]:
    """The pool at one instant from a few indexed queries; the active chips' mean trust (None
    unless asked: it reads every active chip); what to tidy afterwards; what auto_size did
    (the snapshot's config is the one the cycle plans with: sized when auto_size is on).

    now: the instant the plan's clock decisions use (None: the database's clock; tests pass
    one, e.g. a month's last day for the release of banned numbers)."""
    now = repo.db_now(conn) if now is None else now
    configured = repo.load_config(conn)
    config, rec = forecast.sizing(conn, configured, measure)
    counts = repo.status_counts(conn)
    serving = repo.serving_candidates(conn, config)
    # The plan uses one ready chip per replacement, then fills the production deficit: fetch
    # only that many (a large pool holds thousands of ready chips it would never look at).
    deficit = max(0, min(config.producao_min, config.producao_max) - counts.active)
    wanted = len(serving) + deficit
    stranded, sweep = _stranded(conn, counts.active)
    snap = Snapshot(
        config=config,
        counts=counts,
        now=now,
        serving=serving,
        warming=repo.warming_candidates(conn, config),
        ready_ranked=repo.ready_ranked(conn, config, limit=wanted),
        # Banned numbers are released just before their billing month turns, not at once.
        cancellable=repo.cancellable_banned(conn)
        if config.auto_cancel_banned and release.release_due(now)
        else (),
        stranded=stranded,
        flapping=repo.flapping_active(conn, config.flap_max_per_hour),
        purchase_gate=backoff.load(conn, salvy_configured=salvy_configured),
        # Beyond the target plus this cycle's takings, more fit ready chips change nothing.
        ready_fit=repo.count_fit_ready(conn, config, at_most=reserve_target(config) + wanted),
    )
    mean = repo.active_trust_mean(conn) if trust else None
    return snap, mean, sweep, auto_size_view(configured, config, rec)


def read_plan(
    engine: sa.Engine,
    *,
    salvy_configured: bool = True,
    trust: bool = True,
    measure: forecast.Measure | None = None,
    now: datetime | None = None,
) -> tuple[Plan, dict, PoolConfig, Sweep]:
    """The next cycle's plan (changes nothing), the status it saw, the config it planned with
    (sized when auto_size is on; status["auto_size"] says so), what to tidy (now: as
    take_snapshot's)."""
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        snap, mean, sweep, sizing = take_snapshot(
            conn, salvy_configured=salvy_configured, trust=trust, measure=measure, now=now
        )
    status = status_from(
        snap.config,
        snap.counts,
        mean,
        gate=snap.purchase_gate,
        now=snap.now,
        ready_fit=snap.ready_fit,
    )
    return plan_cycle(snap), {**status, "auto_size": sizing}, snap.config, sweep


def plan(engine: sa.Engine, *, salvy_configured: bool = True) -> tuple[Plan, dict, PoolConfig]:
    """What the next cycle would do (changes nothing), the status it saw, and the config."""
    the_plan, status, config, _ = read_plan(engine, salvy_configured=salvy_configured)
    return the_plan, status, config


def tidy(engine: sa.Engine, sweep: Sweep) -> dict:
    """After a cycle: fold the tallies' deltas, settle notes, note the backstop's finds."""
    with transaction(engine) as conn:
        folded = repo.compact_status_tally(conn)
        ops_folded = repo.compact_operation_tally(conn)
        settled = repo.settle_stranded_notes(conn, sweep.settle)
        repo.note_stranded(conn, sweep.unnoted)
        if sweep.backstop_at is not None:
            repo.advance_backstop(conn, sweep.backstop_at)
        pruned = repo.prune_disconnect_events(conn)
    return {
        "tally_rows_folded": folded,
        "operation_tally_rows_folded": ops_folded,
        "notes_settled": settled,
        "noted": len(sweep.unnoted),
        "drops_pruned": pruned,
    }


def raise_alerts(
    engine: sa.Engine, the_plan: Plan, status: dict, cooldown_minutes: int
) -> list[str]:
    """Queue the pool-level alerts that are due; returns the keys that fired."""
    cooldown = timedelta(minutes=cooldown_minutes)
    fired = []
    with transaction(engine) as conn:
        if the_plan.health == "critico" and outbox.alert_once(
            conn, CRITICAL_KEY, messages.pool_critical(status), cooldown=cooldown
        ):
            fired.append(CRITICAL_KEY)
        if the_plan.storm:
            held = len(the_plan.held_for_storm)
            text = messages.storm(held, status["producao"]["count"])
            if outbox.alert_once(conn, STORM_KEY, text, cooldown=cooldown):
                fired.append(STORM_KEY)
    return fired


def alert_invalid_config(engine: sa.Engine, error: ConfigError) -> bool:
    """Tell ops once per cool-down that the cycle refuses to plan."""
    with transaction(engine) as conn:
        return outbox.alert_once(
            conn, CONFIG_KEY, messages.invalid_config(str(error)), cooldown=timedelta(minutes=30)
        )


def plan_as_dict(the_plan: Plan) -> dict:
    """JSON-ready plan (for `chip-orchestrator plan --json` and task results)."""
    data = asdict(the_plan)
    data["replace"] = [{"chip_id": r.chip_id, "reason": r.reason} for r in the_plan.replace]
    return data


def pool_status(engine: sa.Engine, *, salvy_configured: bool = True) -> dict:
    """Counts per state against min/max/buffer (sized by auto_size when on), health, average
    trust, whether purchases run, what auto_size did."""
    with engine.connect() as conn:
        configured = repo.load_config(conn)
        config, rec = forecast.sizing(conn, configured)
        counts, trust = repo.count_by_status(conn)
        gate = backoff.load(conn, salvy_configured=salvy_configured)
        now = repo.db_now(conn)
        ready_fit = repo.count_fit_ready(conn, config)
    status = status_from(config, counts, trust, gate=gate, now=now, ready_fit=ready_fit)
    return {**status, "auto_size": auto_size_view(configured, config, rec)}
