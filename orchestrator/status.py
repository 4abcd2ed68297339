"""Pool status from one aggregate query (never by loading every chip into Python)."""

from __future__ import annotations

import sqlalchemy as sa

from orchestrator import repository as repo
from orchestrator.pool import Counts, PoolConfig, deficits, health


def status_from(config: PoolConfig, counts: Counts, trust_medio: float) -> dict:
    """The seed's obter_status_pool shape, without the chip lists."""
    need = deficits(config, counts)
    return {
        "producao": {
            "count": counts.active,
            "min": config.producao_min,
            "max": config.producao_max,
        },
        "ready": {"count": counts.ready, "min": config.ready_min},
        "warming": {
            "count": counts.warming,
            "buffer": config.warmup_buffer,
            "em_compra": counts.provisioning,
        },
        "degraded": {"count": counts.degraded},
        "saude": health(config, counts),
        "totais": {
            "total_chips": counts.warming + counts.ready + counts.active + counts.degraded,
            "trust_medio": round(trust_medio, 2),
            "em_voo": counts.provisioning,
            "banned": counts.banned,
            "cancelled": counts.cancelled,
        },
        "deficits": {"producao": need.producao, "ready": need.ready, "warming": need.warming},
    }


def pool_status(engine: sa.Engine) -> dict:
    """Counts per state against min/max/buffer, health, average trust of active chips."""
    with engine.connect() as conn:
        config = repo.load_config(conn)
        counts, trust = repo.count_by_status(conn)
    return status_from(config, counts, trust)
