"""Promotions: warming -> ready, and ready -> active while production is short. One transaction each.

ready -> active counts the active chips exactly (pool_config and every growth slot locked, see
services/growth.py), so concurrent promotions and swaps never pass producao_max.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from orchestrator.domain import messages
from orchestrator.domain.pool import PoolConfig, is_fit_to_serve, is_ready_eligible, warmed_days
from orchestrator.errors import Rejected
from orchestrator.services import growth
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction


def promote_warming_to_ready(engine: sa.Engine, chip_id: object) -> dict:
    """warming -> ready when trust, phase and days allow."""
    chip_id = repo.parse_chip_id(chip_id)
    with transaction(engine) as conn:
        now = repo.db_now(conn)
        config = repo.load_config(conn)
        chip = repo.get_chip(conn, chip_id, lock=True)
        if chip["status"] != "warming":
            raise Rejected(f"chip {chip_id} is {chip['status']}, not warming", code="wrong_state")
        if not is_ready_eligible(growth.view(chip), config, now):
            raise Rejected(
                f"chip {chip_id} not eligible: trust {chip['trust_score']:g}"
                f" (min {config.trust_min_for_ready:g}), fase {chip['fase_warmup']},"
                f" {warmed_days(growth.view(chip), now)} of {config.warmup_days} days",
                code="not_eligible",
            )
        days = warmed_days(growth.view(chip), now)
        growth.cas(conn, chip_id, ["warming"], status="ready", ready_at=now)
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
    if not is_fit_to_serve(growth.view(chip), config):
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
        config = growth.lock_for_exact_count(conn)  # serialises every change of the active count
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
        growth.cas(conn, chip_id, ["ready"], status="active", promoted_to_active_at=now)
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
