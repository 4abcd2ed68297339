"""Replacing a chip: swap a degraded or banned chip for the best fit ready one. ONE transaction.

The candidate is taken with FOR UPDATE SKIP LOCKED and every transition is a compare-and-set,
so a duplicate delivery, a lost Redis lock or a second beat cannot promote one ready chip twice.
With no fit ready chip, SPEC's safety rules apply (_without_ready); ready chips merely held by
other tasks are retried instead (busy is not empty).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

import sqlalchemy as sa

from orchestrator.domain import messages
from orchestrator.domain.pool import (
    BANNED,
    DISCONNECTED,
    FLAPPING,
    LOW_TRUST,
    PoolConfig,
    degraded_reason,
    is_fit_to_serve,
    is_storm,
)
from orchestrator.domain.signals import is_flapping
from orchestrator.errors import Rejected
from orchestrator.services import growth as pool_growth
from orchestrator.store import outbox, pipelined
from orchestrator.store import repository as repo

#: Longest `reason` accepted from callers; it is stored as data, never interpreted.
MAX_REASON_LENGTH = 200
#: Statuses a chip can be replaced from.
REPLACEABLE = ("active", "banned")
#: Ready chips to try when others' Redis locks are busy, before retrying the task.
MAX_READY_TRIES = 5
#: Reasons the cycle plans from a snapshot that may be stale when the task runs.
PLANNED = (LOW_TRUST, DISCONNECTED, FLAPPING)
#: Why a planned replace was skipped: the chip recovered, or a storm holds disconnections.
RECOVERED, STORM = "recovered", "storm"


def clean_reason(reason: object) -> str | None:
    """Validate a caller's free-text reason (None, or a short string)."""
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise Rejected(f"reason must be a string, got {type(reason).__name__}", code="malformed")
    if len(reason) > MAX_REASON_LENGTH:
        raise Rejected(f"reason longer than {MAX_REASON_LENGTH} characters", code="malformed")
    return reason.replace("\x00", "").strip() or None


def _motivo(old: Mapping, reason: str | None, config: PoolConfig) -> str:
    if reason == BANNED or old["status"] == "banned":
        return "Chip banido"
    if reason == "low_trust":
        return f"Trust Score {old['trust_score']:g} < {config.trust_degraded_threshold:g}"
    if reason == "disconnected":
        return f"Desconectado desde {old['evolution_disconnected_at']:%Y-%m-%d %H:%M} UTC"
    if reason in messages.REASON_TEXT:
        return f"Chip {messages.REASON_TEXT[reason]}"
    return f"Solicitado: {reason}" if reason else "Solicitado"


def _check_replaceable(conn: sa.Connection, old: Mapping) -> None:
    if old["status"] not in REPLACEABLE:
        raise Rejected(
            f"chip {old['id']} is {old['status']}; only active or banned chips are replaced",
            code="wrong_state",
        )
    handled = old["status"] == "banned" and old["degraded_at"] is not None
    if handled and repo.active_conversations(conn, old["id"]) == 0:
        raise Rejected(f"banned chip {old['id']} was already replaced", code="wrong_state")


def _lock(conn: sa.Connection, chip_id: str) -> tuple[Mapping, PoolConfig, str | None]:
    """The chip's row locked, the config, and how its growth is checked (None: it adds nothing).

    Replacing an already-banned chip adds an active chip; the status read in the first
    statement tells which case this is. Far below producao_max it holds a growth slot, taken
    in that statement before the chip's row lock; otherwise (or with every slot held)
    pool_config and every slot are locked first. Lock order: pool_config, pool_growth_slots,
    chips.
    """
    status, config, old = repo.lock_first(conn, chip_id, pool_growth.SLOT_MARGIN)
    growth = None
    if status == "banned":
        if old is not None:
            growth = pool_growth.SLOT
        else:
            growth, config = pool_growth.EXACT, pool_growth.lock_for_exact_count(conn)
    if old is None:
        old = repo.get_chip(conn, chip_id, lock=True)
    if old["status"] == "banned" and growth is None:
        raise pool_growth.busy(
            f"chip {chip_id} was banned while we read it"
        )  # the retry locks for growth
    return old, config, growth


def _flapping(conn: sa.Connection, old: Mapping, config: PoolConfig) -> str:
    """FLAPPING while the chip still has flap_max_per_hour drops in the hour, unless a storm."""
    if not is_flapping(repo.recent_drops(conn, old["id"]), config.flap_max_per_hour):
        return RECOVERED
    active, disconnected = repo.count_active_disconnected(conn)
    enough = int(active * config.replace_storm_fraction) + 1  # to tell a storm, no more
    flapping = len(repo.flapping_active(conn, config.flap_max_per_hour, limit=enough))
    storm = is_storm(config, active, disconnected) or is_storm(config, active, flapping)
    return STORM if storm else FLAPPING


def _recheck(
    conn: sa.Connection, old: Mapping, config: PoolConfig, now: datetime, reason: str
) -> str:
    """A planned reason under the row lock: the reason that holds now, RECOVERED or STORM."""
    if reason == FLAPPING:
        return _flapping(conn, old, config)
    current = degraded_reason(pool_growth.view(old), config, now)
    if current is None:
        return RECOVERED
    if current == DISCONNECTED and is_storm(config, *repo.count_active_disconnected(conn)):
        return STORM
    return current


def _take_ready(
    conn: sa.Connection,
    config: PoolConfig,
    chip_id: str,
    claim: Callable[[str], bool] | None,
    growth: str | None,
) -> Mapping | None:
    """The best fit ready chip whose row lock (and, with claim, Redis lock) we could take.

    None when no fit ready chip exists, or when the swap may not add an active chip
    (growth.has_room, on the count read with the first candidate). When fit ones exist but
    other tasks hold them all (row lock or Redis lock), raises TransientError: busy is not
    empty, retry shortly.
    """
    unfit, vetoed = [chip_id], []
    for attempt in range(MAX_READY_TRIES):
        candidate, active = repo.best_ready_and_count(conn, config, exclude=unfit + vetoed)
        if attempt == 0 and not pool_growth.has_room(config, growth, active):
            return None
        if candidate is None:
            break
        if not is_fit_to_serve(pool_growth.view(candidate), config):
            unfit.append(candidate["id"])
        elif claim is None or claim(candidate["id"]):
            return candidate
        else:
            vetoed.append(candidate["id"])
    if repo.fit_ready_exists(conn, config, exclude=unfit):
        raise pool_growth.busy("every fit ready chip is held by another task")
    return None


def replace_chip(
    engine: sa.Engine,
    chip_id: object,
    reason: object = None,
    *,
    claim: Callable[[str], bool] | None = None,
    task_id: str | None = None,
) -> dict:
    """Swap an active (or banned) chip for the best fit ready one, moving its conversations.

    A planned reason (low_trust, disconnected) is re-checked under the row lock: a chip that
    recovered is left alone ("recovered"), a disconnection during a storm is held ("storm").
    claim(ready_id) may veto a ready chip (the worker's Redis lock); the row lock and the
    compare-and-set keep the data right without it. task_id (the Celery task's) is written in
    the operation's metadata: a redelivery of a message whose first run committed the swap
    before its worker died answers with that swap ("replaced", redelivered) instead of
    wrong_state.
    """
    chip_id, reason = repo.parse_chip_id(chip_id), clean_reason(reason)
    # Written as now(), the transaction's start (what repo.db_now reads): no round trip for it.
    now = sa.func.now()
    with pipelined.transaction(engine) as conn:  # BEGIN with the first read, COMMIT with the swap
        old, config, growth = _lock(conn, chip_id)
        try:
            _check_replaceable(conn, old)
        except Rejected:
            done = task_id and repo.swap_by_task(conn, chip_id, task_id)
            if not done:
                raise
            return _done(done, old)
        if reason in PLANNED and old["status"] == "active":
            reason = _recheck(conn, old, config, repo.db_now(conn), reason)
            if reason in (RECOVERED, STORM):
                return {"status": "skipped", "chip_id": chip_id, "reason": reason}
        banned = growth is not None or reason == BANNED
        new = _take_ready(conn, config, chip_id, claim, growth)
        if new is None:
            return _without_ready(conn, config, old, banned, reason, now)
        return _swap(conn, config, old, new, "banned" if banned else "degraded", reason, task_id)


def _done(operation: Mapping, old: Mapping) -> dict:
    """The swap an earlier delivery of the same task committed, as its result."""
    return {
        "status": "replaced",
        "chip_id": old["id"],
        "replacement_id": operation["chip_destino_id"],
        "chip_status": old["status"],
        "conversas_migradas": (operation["metadata"] or {}).get("conversas_migradas", 0),
        "operation_id": str(operation["id"]),
        "redelivered": True,
    }


def _swap(
    conn: sa.Connection,
    config: PoolConfig,
    old: Mapping,
    new: Mapping,
    final: str,
    reason: str | None,
    task_id: str | None,
) -> dict:
    """ready -> active, the conversations across, the old chip out; one operation, one message.

    One statement with the COMMIT (repo.swap_and_record); times are the transaction's now().
    """
    chip_id = old["id"]
    moved, operation = repo.swap_and_record(
        conn,
        old,
        new["id"],
        final,
        {
            "operacao": "auto_replace",
            "chip_id": chip_id,
            "chip_destino_id": new["id"],
            "motivo": _motivo(old, reason, config),
            "metadata": {
                "trust_degradado": old["trust_score"],
                "trust_novo": new["trust_score"],
                "reason": reason,
                **({"task_id": task_id} if task_id else {}),
            },
            "sucesso": True,
        },
        ("operacoes", messages.replaced(old, new, repo.MOVED, reason)),
        forget_alert=f"no_ready:{chip_id}",
    )
    return {
        "status": "replaced",
        "chip_id": chip_id,
        "replacement_id": new["id"],
        "chip_status": final,
        "conversas_migradas": moved,
        "operation_id": operation,
    }


def _without_ready(
    conn: sa.Connection,
    config: PoolConfig,
    old: Mapping,
    banned: bool,
    reason: str | None,
    now: sa.ColumnElement,
) -> dict:
    """SPEC's safety rules when no fit ready chip exists (busy ones were retried instead)."""
    chip_id = old["id"]
    result = {"status": "no_ready_chip", "chip_id": chip_id, "conversas_migradas": 0}
    if not banned:
        outbox.alert_once(
            conn, f"no_ready:{chip_id}", messages.degraded_without_ready(old, reason), cooldown=None
        )
        return {**result, "action": "kept_serving"}
    target = repo.least_loaded_healthy_active(conn, config, exclude=chip_id)
    if target is None:
        if old["status"] != "banned":
            pool_growth.cas(conn, chip_id, [old["status"]], status="banned")
            repo.record_operation(conn, "demotion", chip_id, "Chip banido (sem chip ready)")
        outbox.alert_once(
            conn, f"no_ready:{chip_id}", messages.banned_without_ready(old, None, 0), cooldown=None
        )
        return {**result, "action": "no_healthy_active_chip"}
    moved = repo.move_conversations(conn, chip_id, target["id"], now)
    pool_growth.cas(conn, chip_id, [old["status"]], status="banned", degraded_at=now)
    repo.record_operation(
        conn,
        "migration",
        chip_id,
        "Chip banido sem chip ready: conversas para o ativo menos carregado",
        destino=target["id"],
        metadata={"conversas_migradas": moved, "reason": reason},
    )
    outbox.enqueue(conn, "alertas", messages.banned_without_ready(old, target, moved))
    return {
        **result,
        "action": "conversations_moved",
        "target_id": target["id"],
        "conversas_migradas": moved,
    }
