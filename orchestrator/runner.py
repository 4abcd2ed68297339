"""run_cycle: plan once per period and fan out one task per chip and one per number to buy."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

import redis
import sqlalchemy as sa

from orchestrator import cycle, locks, provisioning
from orchestrator.errors import ConfigError

log = logging.getLogger(__name__)

#: send(task_name, args, task_id) puts one task on the broker.
Send = Callable[[str, list, str | None], None]

REPLACE = "orchestrator.replace_chip"
PROMOTE_READY = "orchestrator.promote_warming_to_ready"
PROMOTE_ACTIVE = "orchestrator.promote_ready_to_active"
PROVISION = "orchestrator.provision_chip"
CANCEL = "orchestrator.cancel_chip"
MIGRATE = "orchestrator.migrate_conversations"
#: Redis hash of the last planned cycle (finished_at epoch seconds, duration_seconds), for metrics.
LAST_CYCLE_KEY = "chiporch:cycle:last"


def run_cycle(
    engine: sa.Engine,
    client: redis.Redis,
    send: Send,
    *,
    period_seconds: float,
    deadline_minutes: int = 15,
) -> dict:
    """One cycle: claim the period's slot, plan, alert, dispatch. Changes no chip itself."""
    started = time.monotonic()
    if not locks.claim_cycle_slot(client, period_seconds):
        return {"status": "skipped", "reason": "another cycle already ran in this period"}
    try:
        plan, status, config = cycle.plan(engine)
    except ConfigError as error:
        cycle.alert_invalid_config(engine, error)
        return {"status": "rejected", "reason": str(error)}
    alerts = cycle.raise_alerts(engine, plan, status, config.alert_cooldown_minutes)
    queued_ttl = max(60, int(period_seconds * 5))
    sent = {REPLACE: 0, PROMOTE_READY: 0, PROMOTE_ACTIVE: 0, PROVISION: 0, CANCEL: 0, MIGRATE: 0}
    already = 0

    def once(task: str, chip_id: str, args: list) -> None:
        nonlocal already
        if locks.mark_queued(client, task, chip_id, queued_ttl):
            send(task, args, None)
            sent[task] += 1
        else:
            already += 1

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
    for _ in range(plan.provision):
        # The intent is committed before the task exists, so the next cycle counts it in flight.
        task_id = str(uuid.uuid4())
        provisioning.ensure_intent(
            engine, provisioning.intent_name(task_id), config.default_ddd, deadline_minutes
        )
        send(PROVISION, [], task_id)
        sent[PROVISION] += 1
    record_cycle(client, time.monotonic() - started)
    return {
        "status": "planned",
        "saude": plan.health,
        "storm": plan.storm,
        "held_for_storm": len(plan.held_for_storm),
        "dispatched": {name.split(".", 1)[1]: n for name, n in sent.items()},
        "already_queued": already,
        "alerts": alerts,
        "pool": {k: status[k]["count"] for k in ("producao", "ready", "warming", "degraded")},
    }


def record_cycle(client: redis.Redis, duration_seconds: float) -> None:
    """Remember when the last cycle finished and how long it took; a Redis error only logs."""
    try:
        client.hset(
            LAST_CYCLE_KEY,
            mapping={"finished_at": repr(time.time()), "duration_seconds": repr(duration_seconds)},
        )
    except redis.RedisError as error:
        log.warning("could not record the cycle's timing: %s", type(error).__name__)
