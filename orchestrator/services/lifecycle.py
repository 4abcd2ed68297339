"""Lifecycle use cases. Each is ONE transaction that re-checks state and logs its operation.

Candidates are taken with FOR UPDATE SKIP LOCKED and every transition is a compare-and-set, so
a duplicate delivery, a lost Redis lock or a second beat cannot promote one ready chip twice.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa

from orchestrator.domain import messages
from orchestrator.domain.pool import (
    BANNED,
    DISCONNECTED,
    LOW_TRUST,
    ChipView,
    PoolConfig,
    degraded_reason,
    is_fit_to_serve,
    is_ready_eligible,
    is_storm,
    warmed_days,
)
from orchestrator.errors import Rejected, TransientError
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction

#: Longest `reason` accepted from callers; it is stored as data, never interpreted.
MAX_REASON_LENGTH = 200
#: Statuses a chip can be replaced from.
REPLACEABLE = ("active", "banned")
#: Ready chips to try when others' Redis locks are busy, before retrying the task.
MAX_READY_TRIES = 5
#: Reasons the cycle plans from a snapshot that may be stale when the task runs.
PLANNED = (LOW_TRUST, DISCONNECTED)
#: Why a planned replace was skipped: the chip recovered, or a storm holds disconnections.
RECOVERED, STORM = "recovered", "storm"
#: Seconds (min, max) before retrying when other tasks hold what we need for a moment.
BUSY_RETRY_SECONDS = (0.2, 1.0)
#: Rows of pool_growth_slots (capped by its CHECK, migration 0005): at most this many swaps add
#: an active chip at once without the exclusive pool_config lock.
GROWTH_SLOTS = 16
#: How a swap that adds an active chip is kept under producao_max: far below it, holding one
#: growth slot beside other swaps (SLOT); otherwise pool_config and every slot locked (EXACT).
SLOT, EXACT = "slot", "exact"


def clean_reason(reason: object) -> str | None:
    """Validate a caller's free-text reason (None, or a short string)."""
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise Rejected(f"reason must be a string, got {type(reason).__name__}", code="malformed")
    if len(reason) > MAX_REASON_LENGTH:
        raise Rejected(f"reason longer than {MAX_REASON_LENGTH} characters", code="malformed")
    return reason.replace("\x00", "").strip() or None


def _view(row: Mapping) -> ChipView:
    return ChipView(**{k: row[k] for k in ChipView.__dataclass_fields__})


def _motivo(old: Mapping, reason: str | None, config: PoolConfig) -> str:
    if reason == BANNED or old["status"] == "banned":
        return "Chip banido"
    if reason == "low_trust":
        return f"Trust Score {old['trust_score']:g} < {config.trust_degraded_threshold:g}"
    if reason == "disconnected":
        return f"Desconectado desde {old['evolution_disconnected_at']:%Y-%m-%d %H:%M} UTC"
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


def _busy(what: str) -> TransientError:
    """Another task holds what we need for a moment: retry soon (jittered), not in minutes."""
    return TransientError(what, retry_after=random.uniform(*BUSY_RETRY_SECONDS))


def _cas(conn: sa.Connection, chip_id: str, expected: Sequence[str], **values: object) -> Mapping:
    """repo.transition, or Rejected(conflict) when the row was not in an expected status."""
    row = repo.transition(conn, chip_id, expected, **values)
    if row is None:
        raise Rejected(f"chip {chip_id} is no longer {'/'.join(expected)}", code="conflict")
    return row


def _lock(conn: sa.Connection, chip_id: str) -> tuple[Mapping, PoolConfig, str | None]:
    """The chip's row locked, the config, and how its growth is checked (None: it adds nothing).

    Replacing an already-banned chip adds an active chip; an unlocked read of the status tells
    which case this is. Lock order: pool_config, pool_growth_slots, chips.
    """
    grows = repo.get_chip(conn, chip_id)["status"] == "banned"
    growth, config = _growth_locks(conn) if grows else (None, repo.load_config(conn))
    old = repo.get_chip(conn, chip_id, lock=True)
    if old["status"] == "banned" and not grows:
        raise _busy(f"chip {chip_id} was banned while we read it")  # the retry locks for growth
    return old, config, growth


def _growth_locks(conn: sa.Connection) -> tuple[str, PoolConfig]:
    """SLOT when far below producao_max and a growth slot is free (nothing waited for), else EXACT.

    At most GROWTH_SLOTS swaps hold a slot, and each checks (_has_room) that the active count,
    read after taking its slot, leaves GROWTH_SLOTS of room: together they cannot pass
    producao_max. EXACT (near the maximum, every slot busy, promotions) locks pool_config, then
    every slot, so it counts after the slot holders commit and none starts until it does.
    """
    config, active = repo.load_config_and_active(conn)
    if active <= config.producao_max - 2 * GROWTH_SLOTS and repo.take_growth_slot(conn):
        return SLOT, config
    return EXACT, _lock_for_exact_count(conn)


def _lock_for_exact_count(conn: sa.Connection) -> PoolConfig:
    """pool_config, then every growth slot: the active count cannot change under us but by others."""
    config = repo.load_config(conn, lock=True)
    repo.lock_growth_slots(conn)
    return config


def _has_room(conn: sa.Connection, config: PoolConfig, growth: str | None) -> bool:
    """Whether this swap may add an active chip (always, when it adds none)."""
    if growth is None:
        return True
    active = repo.count_active(conn)
    if growth == EXACT:
        return active < config.producao_max
    if active > config.producao_max - GROWTH_SLOTS:  # others grew it since our first read
        raise _busy("active count rose near producao_max; retry counting exactly")
    return True


def _recheck(conn: sa.Connection, old: Mapping, config: PoolConfig, now: datetime) -> str:
    """A planned reason under the row lock: the reason that holds now, RECOVERED or STORM."""
    current = degraded_reason(_view(old), config, now)
    if current is None:
        return RECOVERED
    if current == DISCONNECTED and is_storm(config, *repo.count_active_disconnected(conn)):
        return STORM
    return current


def _take_ready(
    conn: sa.Connection, config: PoolConfig, chip_id: str, claim: Callable[[str], bool] | None
) -> Mapping | None:
    """The best fit ready chip whose row lock (and, with claim, Redis lock) we could take.

    None only when no fit ready chip exists. When some exist but other tasks hold them all
    (row lock or Redis lock), raises TransientError: busy is not empty, retry shortly.
    """
    unfit, vetoed = [chip_id], []
    for _ in range(MAX_READY_TRIES):
        candidate = repo.best_ready(conn, config, exclude=unfit + vetoed)
        if candidate is None:
            break
        if not is_fit_to_serve(_view(candidate), config):
            unfit.append(candidate["id"])
        elif claim is None or claim(candidate["id"]):
            return candidate
        else:
            vetoed.append(candidate["id"])
    if repo.fit_ready_exists(conn, config, exclude=unfit):
        raise _busy("every fit ready chip is held by another task")
    return None


def replace_chip(
    engine: sa.Engine,
    chip_id: object,
    reason: object = None,
    *,
    claim: Callable[[str], bool] | None = None,
) -> dict:
    """Swap an active (or banned) chip for the best fit ready one, moving its conversations.

    A planned reason (low_trust, disconnected) is re-checked under the row lock: a chip that
    recovered is left alone ("recovered"), a disconnection during a storm is held ("storm").
    claim(ready_id) may veto a ready chip (the worker's Redis lock); the row lock and the
    compare-and-set keep the data right without it.
    """
    chip_id, reason = repo.parse_chip_id(chip_id), clean_reason(reason)
    # Written as now(), the transaction's start (what repo.db_now reads): no round trip for it.
    now = sa.func.now()
    with transaction(engine) as conn:
        old, config, growth = _lock(conn, chip_id)
        _check_replaceable(conn, old)
        if reason in PLANNED and old["status"] == "active":
            reason = _recheck(conn, old, config, repo.db_now(conn))
            if reason in (RECOVERED, STORM):
                return {"status": "skipped", "chip_id": chip_id, "reason": reason}
        banned = growth is not None or reason == BANNED
        new = _take_ready(conn, config, chip_id, claim) if _has_room(conn, config, growth) else None
        if new is None:
            return _without_ready(conn, config, old, banned, reason, now)
        return _swap(conn, config, old, new, "banned" if banned else "degraded", reason, now)


def _swap(
    conn: sa.Connection,
    config: PoolConfig,
    old: Mapping,
    new: Mapping,
    final: str,
    reason: str | None,
    now: sa.ColumnElement,
) -> dict:
    """ready -> active, the conversations across, the old chip out; one operation, one message."""
    chip_id = old["id"]
    _cas(conn, new["id"], ["ready"], status="active", promoted_to_active_at=now)
    moved = repo.move_conversations(conn, chip_id, new["id"], now)
    _cas(conn, chip_id, [old["status"]], status=final, degraded_at=now)
    operation = repo.record_operation(
        conn,
        "auto_replace",
        chip_id,
        _motivo(old, reason, config),
        destino=new["id"],
        metadata={
            "conversas_migradas": moved,
            "trust_degradado": old["trust_score"],
            "trust_novo": new["trust_score"],
            "reason": reason,
        },
    )
    outbox.enqueue(conn, "operacoes", messages.replaced(old, new, moved, reason))
    outbox.forget_alert(conn, f"no_ready:{chip_id}")
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
            _cas(conn, chip_id, [old["status"]], status="banned")
            repo.record_operation(conn, "demotion", chip_id, "Chip banido (sem chip ready)")
        outbox.alert_once(
            conn, f"no_ready:{chip_id}", messages.banned_without_ready(old, None, 0), cooldown=None
        )
        return {**result, "action": "no_healthy_active_chip"}
    moved = repo.move_conversations(conn, chip_id, target["id"], now)
    _cas(conn, chip_id, [old["status"]], status="banned", degraded_at=now)
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


def promote_warming_to_ready(engine: sa.Engine, chip_id: object) -> dict:
    """warming -> ready when trust, phase and days allow."""
    chip_id = repo.parse_chip_id(chip_id)
    with transaction(engine) as conn:
        now = repo.db_now(conn)
        config = repo.load_config(conn)
        chip = repo.get_chip(conn, chip_id, lock=True)
        if chip["status"] != "warming":
            raise Rejected(f"chip {chip_id} is {chip['status']}, not warming", code="wrong_state")
        if not is_ready_eligible(_view(chip), config, now):
            raise Rejected(
                f"chip {chip_id} not eligible: trust {chip['trust_score']:g}"
                f" (min {config.trust_min_for_ready:g}), fase {chip['fase_warmup']},"
                f" {warmed_days(_view(chip), now)} of {config.warmup_days} days",
                code="not_eligible",
            )
        days = warmed_days(_view(chip), now)
        _cas(conn, chip_id, ["warming"], status="ready", ready_at=now)
        repo.record_operation(
            conn,
            "promotion_warming_ready",
            chip_id,
            f"Trust {chip['trust_score']:g} >= {config.trust_min_for_ready:g}, {days} dias",
            metadata={"trust": chip["trust_score"], "dias": days},
        )
        outbox.enqueue(conn, "operacoes", messages.promoted_ready(chip, days or 0))
    return {"status": "promoted", "chip_id": chip_id, "to": "ready"}


def _check_fit(chip: Mapping, config: PoolConfig) -> None:
    """A ready chip that may not serve now (disconnected, trust fell) is refused: not_fit."""
    if not is_fit_to_serve(_view(chip), config):
        raise Rejected(
            f"chip {chip['id']} not fit to serve: connected {chip['evolution_connected']},"
            f" trust {chip['trust_score']:g} (min {config.trust_min_for_ready:g})",
            code="not_fit",
        )


def promote_ready_to_active(engine: sa.Engine, chip_id: object) -> dict:
    """ready -> active while active < producao_min, never above producao_max, if fit to serve."""
    chip_id = repo.parse_chip_id(chip_id)
    with transaction(engine) as conn:
        now = repo.db_now(conn)
        config = _lock_for_exact_count(conn)  # serialises every change of the active count
        chip = repo.get_chip(conn, chip_id, lock=True)
        if chip["status"] != "ready":
            raise Rejected(f"chip {chip_id} is {chip['status']}, not ready", code="wrong_state")
        _check_fit(chip, config)
        active = repo.count_active(conn)
        if active >= min(config.producao_min, config.producao_max):
            return {
                "status": "skipped",
                "chip_id": chip_id,
                "reason": f"producao {active}/{config.producao_min}: no deficit",
            }
        _cas(conn, chip_id, ["ready"], status="active", promoted_to_active_at=now)
        repo.record_operation(
            conn,
            "promotion_ready_active",
            chip_id,
            f"Deficit de producao: {config.producao_min - active}",
            metadata={"producao": active + 1, "producao_min": config.producao_min},
        )
        outbox.enqueue(
            conn, "operacoes", messages.promoted_active(chip, active + 1, config.producao_min)
        )
    return {"status": "promoted", "chip_id": chip_id, "to": "active"}
