"""run_cycle: plan and fan out one task per chip and one per number to buy.

Any number of cycles may be sent at any time: one that starts while another runs answers
`skipped` (the cycle guard, locks.cycle_guard); one that starts after it plans.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa

from orchestrator.adapters import cycle_timing, locks
from orchestrator.domain.pool import Plan, PoolConfig
from orchestrator.errors import ConfigError, TransientError
from orchestrator.services import (
    backoff,
    cycle,
    cycle_purchases,
    forecast,
    rehabilitation,
    tally,
)
from orchestrator.store.db import transaction
from orchestrator.task_names import (
    CANCEL,
    MIGRATE,
    PROMOTE_ACTIVE,
    PROMOTE_READY,
    PROVISION,
    REPLACE,
)

if TYPE_CHECKING:  # the client is built and used by the adapters; here it is only passed on
    import redis

log = logging.getLogger(__name__)

T = TypeVar("T")

#: send(task_name, args, task_id) puts one task on the broker.
Send = Callable[[str, list, str | None], None]


def run_cycle(
    engine: sa.Engine,
    client: redis.Redis,
    send: Send,
    *,
    period_seconds: float,
    deadline_minutes: int = 15,
    salvy_configured: bool = True,
) -> dict:
    """One cycle, unless another is running right now (then `skipped`). Changes no chip itself."""
    with locks.cycle_guard(engine) as held:
        if not held:
            return {"status": "skipped", "reason": "cycle in progress"}
        return _planned_cycle(
            engine,
            client,
            send,
            period_seconds=period_seconds,
            deadline_minutes=deadline_minutes,
            salvy_configured=salvy_configured,
        )


def _planned_cycle(
    engine: sa.Engine,
    client: redis.Redis,
    send: Send,
    *,
    period_seconds: float,
    deadline_minutes: int,
    salvy_configured: bool,
) -> dict:
    """Plan, alert, dispatch (the cycle guard is held)."""
    started = time.monotonic()
    deferred: list[str] = []
    # Cached counts first: the plan decides on them (a drift is corrected before it is read).
    corrected = _step("tally_check", deferred, lambda: tally.check_due(engine), {})
    # Degraded chips fit again return to ready before the plan: they count in its reserve.
    returned = _step(
        "rehabilitation", deferred, lambda: rehabilitation.return_to_service(engine), []
    )
    try:
        # The cycle's status needs no mean trust (it would read every active chip).
        plan, status, config, sweep = cycle.read_plan(
            engine,
            salvy_configured=salvy_configured,
            trust=False,
            measure=forecast.cached_measure(client),
        )
    except ConfigError as error:
        cycle.alert_invalid_config(engine, error)
        return {"status": "rejected", "reason": str(error)}
    # Each step but the plan stands alone: a lock held elsewhere (or a failed write) defers
    # that step to the next cycle, said in the result, and the rest of the cycle still runs.
    alerts = _step(
        "alerts",
        deferred,
        lambda: cycle.raise_alerts(engine, plan, status, config.alert_cooldown_minutes),
        [],
    )
    if (
        config.auto_provision
        and not salvy_configured
        and _step("alerts", deferred, lambda: _alert_no_salvy(engine), False)
    ):
        alerts.append(backoff.NO_SALVY_KEY)
    if _daily_cap_holds_back(plan, config) and _step(
        "alerts", deferred, lambda: _alert_daily_cap(engine, plan, config), False
    ):
        alerts.append(backoff.DAILY_CAP_KEY)
    queued_ttl = max(60, int(period_seconds * 5))
    sent = {REPLACE: 0, PROMOTE_READY: 0, PROMOTE_ACTIVE: 0, PROVISION: 0, CANCEL: 0, MIGRATE: 0}
    already = 0

    def once(task: str, chip_id: str, args: list) -> None:
        nonlocal already
        if not locks.mark_queued(client, task, chip_id, queued_ttl):
            already += 1
            return
        try:
            send(task, args, None)
        except BaseException:
            _unmark(client, task, chip_id)  # nothing queued: the next cycle may send it again
            raise
        sent[task] += 1

    for item in plan.replace:
        once(REPLACE, item.chip_id, [item.chip_id, item.reason])
    for chip_id in plan.promote_ready:
        once(PROMOTE_READY, chip_id, [chip_id])
    for chip_id in plan.promote_active:
        once(PROMOTE_ACTIVE, chip_id, [chip_id])
    for chip_id in plan.cancel:
        once(CANCEL, chip_id, [chip_id])
    for chip_id in plan.migrate:
        once(MIGRATE, chip_id, [chip_id])
    # Intents are committed before their tasks exist (the next cycle counts them in flight),
    # re-counted under a lock, so overlapping cycles never buy more than the deficit.
    keys = (
        _step(
            "purchases",
            deferred,
            lambda: cycle_purchases.record_intents(
                engine,
                plan.provision,
                deadline_minutes,
                salvy_configured=salvy_configured,
                warmup_buffer=config.warmup_buffer,
                ready_min=config.ready_min,
                ready_left=plan.ready_left,
            ),
            [],
        )
        if plan.provision
        else []
    )
    for position, key in enumerate(keys):
        try:
            send(PROVISION, [], key)
        except BaseException:
            _drop_unsent(engine, keys[position:])
            raise
        sent[PROVISION] += 1
    _step("tidy", deferred, lambda: cycle.tidy(engine, sweep), None)
    cycle_timing.record(client, time.monotonic() - started)
    return {
        "status": "planned",
        "saude": plan.health,
        "storm": plan.storm,
        "held_for_storm": len(plan.held_for_storm),
        "dispatched": {name.split(".", 1)[1]: n for name, n in sent.items()},
        "already_queued": already,
        "alerts": alerts,
        "deferred": sorted(set(deferred)),
        "counts_corrected": {status: list(pair) for status, pair in corrected.items()},
        "rehabilitated": len(returned),
        "pool": {k: status[k]["count"] for k in ("producao", "ready", "warming", "degraded")},
    }


def _unmark(client: redis.Redis, task: str, chip_id: str) -> None:
    """Clear a "queued" marker whose send failed; if Redis fails too, its TTL clears it."""
    try:
        locks.clear_queued(client, task, chip_id)
    except TransientError as error:
        log.warning("queued marker of %s %s left to expire: %s", task, chip_id, error)


def _drop_unsent(engine: sa.Engine, keys: list[str]) -> None:
    """Intents whose task was never sent are removed, so they do not block purchases."""
    try:
        cycle_purchases.drop_unsent(engine, keys)
    except Exception as error:  # left in flight until reconcile fails them at their deadline
        log.warning("%d unsent purchase intents left to reconcile: %s", len(keys), error)


def _step(name: str, deferred: list[str], run: Callable[[], T], default: T) -> T:
    """One step of the cycle; a busy lock or a failed write defers it to the next cycle.

    What each step leaves undone is safe to do later: alerts keep their cool-down state,
    purchases are re-counted by the next cycle, the tally folds and the notes stay.
    """
    try:
        return run()
    except TransientError as error:
        log.warning("cycle step %s deferred to the next cycle: %s", name, error)
        deferred.append(name)
        return default


def _daily_cap_holds_back(plan: Plan, config: PoolConfig) -> bool:
    """The reserve is short, and only max_purchases_per_day keeps the cycle from buying."""
    return (
        config.auto_provision
        and plan.purchase_gate.salvy_configured
        and plan.purchase_gate.capped(config)
        and plan.reserve < plan.reserve_target
    )


def _alert_daily_cap(engine: sa.Engine, plan: Plan, config: PoolConfig) -> bool:
    with transaction(engine) as conn:
        return backoff.alert_daily_cap(conn, plan.purchase_gate, config.max_purchases_per_day or 0)


def _alert_no_salvy(engine: sa.Engine) -> bool:
    """auto_provision is on with no Salvy to buy from: tell ops once."""
    with transaction(engine) as conn:
        return backoff.alert_no_salvy(conn)
