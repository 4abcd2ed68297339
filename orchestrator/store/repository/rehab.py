"""Degraded chips that may return to service: fit now, degraded long enough, why they left.

Every function takes the caller's Connection; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from orchestrator.domain.config import PoolConfig
from orchestrator.store.repository.chips import VIEW_COLUMNS
from orchestrator.store.repository.signals import FLAP_WINDOW
from orchestrator.store.schema import chip_disconnect_events, chips, operations


def _last_replace_reason() -> sa.ScalarSelect:
    """The reason of the chip's latest successful auto_replace (idx_orchestrator_ops_chip)."""
    return (
        sa.select(operations.c.metadata["reason"].astext)
        .where(
            operations.c.chip_id == chips.c.id,
            operations.c.operacao == "auto_replace",
            operations.c.sucesso.is_not(False),
        )
        .order_by(operations.c.created_at.desc())
        .limit(1)
        .scalar_subquery()
    )


def _drops_last_hour() -> sa.ScalarSelect:
    return (
        sa.select(sa.func.count())
        .where(
            chip_disconnect_events.c.chip_id == chips.c.id,
            chip_disconnect_events.c.at > sa.func.now() - FLAP_WINDOW,
        )
        .scalar_subquery()
    )


def rehab_candidates(conn: sa.Connection, config: PoolConfig, limit: int) -> list[Mapping]:
    """Degraded chips connected with trust >= trust_min_for_ready, degraded rehab_after_minutes
    ago or more, longest degraded first, locked (SKIP LOCKED: one a task holds is left for the
    next cycle); with the reason they were replaced and their drops in the last hour.
    idx_chips_degraded_fit serves the range."""
    if config.rehab_after_minutes is None:
        return []
    waited = sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, config.rehab_after_minutes)
    stmt = (
        sa.select(
            *VIEW_COLUMNS,
            chips.c.telefone,
            _last_replace_reason().label("reason"),
            _drops_last_hour().label("drops"),
        )
        .where(
            chips.c.status == "degraded",
            chips.c.evolution_connected,
            chips.c.trust_score >= config.trust_min_for_ready,
            chips.c.degraded_at <= waited,
        )
        .order_by(chips.c.degraded_at)
        .limit(limit)
        .with_for_update(of=chips, skip_locked=True)
    )
    return list(conn.execute(stmt).mappings())
