"""Stranded conversations: open rows left on a chip that no longer serves, moved in one transaction.

Other services route new conversations from a read of `chips` that may be a moment old, so rows
keep arriving on a chip while and after it is swapped out. The cycle finds them and this use case
moves them: to the chip's replacement while it still serves, else to the least-loaded healthy
active chip. Running it again moves only what arrived since (idempotent).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import sqlalchemy as sa

from orchestrator.domain import messages
from orchestrator.domain.pool import PoolConfig
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction

#: metadata.destino_por: where the conversations went.
BY_REPLACEMENT, BY_LEAST_LOADED = "substituto", "menos_carregado"


def alert_key(chip_id: str) -> str:
    """The cool-down key of the no-target alert for one chip."""
    return f"stranded:{chip_id}"


def _target(
    conn: sa.Connection, config: PoolConfig, chip_id: str
) -> tuple[Mapping | None, str | None]:
    """The chip's replacement while it serves, else the least-loaded healthy active chip."""
    replacement = repo.replacement_of(conn, chip_id)
    if replacement is not None:
        target = repo.lock_if_serving(conn, config, replacement)
        if target is not None:
            return target, BY_REPLACEMENT
    target = repo.least_loaded_healthy_active(conn, config, exclude=chip_id)
    return target, (BY_LEAST_LOADED if target is not None else None)


def migrate_conversations(engine: sa.Engine, chip_id: object) -> dict:
    """Move the open conversations of a chip that is not active; one `migration` operation."""
    chip_id = repo.parse_chip_id(chip_id)
    with transaction(engine) as conn:
        now = repo.db_now(conn)
        # FOR UPDATE also holds back routers' INSERTs on this chip (their foreign key takes a
        # KEY SHARE lock on it) until we commit: what they add afterwards, the next cycle moves.
        chip = repo.get_chip(conn, chip_id, lock=True)
        if chip["status"] == "active":
            return {"status": "skipped", "chip_id": chip_id, "reason": "chip serves"}
        waiting = repo.active_conversations(conn, chip_id)
        if waiting == 0:
            return {"status": "nothing_to_move", "chip_id": chip_id}
        config = repo.load_config(conn)
        target, by = _target(conn, config, chip_id)
        if target is None:
            cooldown = timedelta(minutes=config.alert_cooldown_minutes)
            text = messages.stranded_without_target(chip, waiting)
            outbox.alert_once(conn, alert_key(chip_id), text, cooldown=cooldown)
            return {"status": "no_target", "chip_id": chip_id, "conversas": waiting}
        moved = repo.move_conversations(conn, chip_id, target["id"], now)
        if moved == 0:  # closed by their service since we counted them
            return {"status": "nothing_to_move", "chip_id": chip_id}
        operation = repo.record_operation(
            conn,
            "migration",
            chip_id,
            f"Conversas abertas em chip {chip['status']} (fora de producao)",
            destino=target["id"],
            metadata={"conversas_migradas": moved, "destino_por": by},
        )
        outbox.enqueue(conn, "operacoes", messages.conversations_migrated(chip, target, moved, by))
    return {
        "status": "migrated",
        "chip_id": chip_id,
        "target_id": target["id"],
        "destino_por": by,
        "conversas_migradas": moved,
        "operation_id": operation,
    }
