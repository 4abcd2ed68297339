"""The seed's cycle, read side only, as the baseline: what `executar_ciclo` reads and computes.

Faithful to the seed (shared/seed, Stories 1.1-1.5): `obter_status_pool` loads every warming,
ready, active and degraded chip (the nine columns it selects) into Python, and the cycle calls
it three times (verificar_promocoes_ready_active, verificar_provisioning via verificar_deficits,
and the final log); degraded chips come from two `SELECT *` and a list merge; warming candidates
are filtered by days in Python. With `per_change=True` it also issues the reads the seed makes
for each change (best ready chip, the conversation ids to move). The seed's writes (four per
replacement, two per promotion) are skipped on both sides: the cycle here only plans.

Generous to the seed: one PostgreSQL connection instead of an HTTP round trip to Supabase per
query, and rows arrive as Python objects instead of JSON to parse.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

STATUS_COLUMNS = (
    "id, telefone, instance_name, status, trust_score, trust_level, "
    "fase_warmup, warming_started_at, msgs_enviadas_hoje"
)


def _all(conn: sa.Connection, sql: str, **params: object) -> list[dict]:
    return [dict(row) for row in conn.execute(sa.text(sql), params).mappings()]


def obter_status_pool(conn: sa.Connection, config: dict) -> dict:
    """The seed's status: every relevant chip row into Python, grouped and counted there."""
    chips = _all(
        conn,
        f"SELECT {STATUS_COLUMNS} FROM chips"
        " WHERE status IN ('warming', 'ready', 'active', 'degraded')",
    )
    producao = [c for c in chips if c["status"] == "active"]
    ready = [c for c in chips if c["status"] == "ready"]
    warming = [c for c in chips if c["status"] == "warming"]
    degraded = [c for c in chips if c["status"] == "degraded"]
    saude = "saudavel"
    if len(producao) < config["producao_min"]:
        saude = "critico"
    elif len(ready) < config["ready_min"] or len(warming) < config["warmup_buffer"] // 2:
        saude = "atencao"
    trust = sum(c["trust_score"] for c in producao) / len(producao) if producao else 0
    return {
        "producao": {"count": len(producao), "chips": producao},
        "ready": {"count": len(ready), "chips": ready},
        "warming": {"count": len(warming), "chips": warming},
        "degraded": {"count": len(degraded), "chips": degraded},
        "saude": saude,
        "totais": {"total_chips": len(chips), "trust_medio": trust},
    }


def _degradados(conn: sa.Connection, config: dict) -> list[dict]:
    degradados = _all(
        conn,
        "SELECT * FROM chips WHERE status = 'active' AND trust_score < :t",
        t=config["trust_degraded_threshold"],
    )
    for chip in _all(
        conn, "SELECT * FROM chips WHERE status = 'active' AND evolution_connected = false"
    ):
        if chip not in degradados:  # the seed's list membership: a scan per chip
            degradados.append(chip)
    return degradados


def _per_change_reads(conn: sa.Connection, config: dict, degradados: list[dict]) -> None:
    for chip in degradados:
        _all(
            conn,
            "SELECT * FROM chips WHERE status = 'ready' AND trust_score >= :t"
            " ORDER BY trust_score DESC LIMIT 1",
            t=config["trust_min_for_ready"],
        )
        _all(
            conn,
            "SELECT id FROM conversation_chips WHERE chip_id = :c AND active = true",
            c=chip["id"],
        )


def _warming_ready(conn: sa.Connection, config: dict) -> list[str]:
    now = datetime.now(UTC)
    rows = _all(
        conn,
        "SELECT * FROM chips WHERE status = 'warming' AND fase_warmup = 'operacao'"
        " AND trust_score >= :t",
        t=config["trust_min_for_ready"],
    )
    return [
        c["id"]
        for c in rows
        if c["warming_started_at"] and (now - c["warming_started_at"]).days >= config["warmup_days"]
    ]


def seed_cycle(engine: sa.Engine, *, per_change: bool = False) -> dict:
    """One seed cycle's reads and decisions (no writes); returns what it would change."""
    with engine.connect() as conn:
        config = _all(conn, "SELECT * FROM pool_config LIMIT 1")[0]
        degradados = _degradados(conn, config)
        if per_change:
            _per_change_reads(conn, config, degradados)
        to_ready = _warming_ready(conn, config)
        status = obter_status_pool(conn, config)
        deficit = config["producao_min"] - status["producao"]["count"]
        to_active = []
        if deficit > 0:
            to_active = _all(
                conn,
                "SELECT * FROM chips WHERE status = 'ready' ORDER BY trust_score DESC LIMIT :n",
                n=deficit,
            )
        provision = 0
        if config["auto_provision"]:
            status = obter_status_pool(conn, config)  # verificar_provisioning -> verificar_deficits
            provision = min(max(0, config["warmup_buffer"] - status["warming"]["count"]), 3)
        status = obter_status_pool(conn, config)  # the final log line
        conn.rollback()
    return {
        "replace": len(degradados),
        "promote_ready": len(to_ready),
        "promote_active": len(to_active),
        "provision": provision,
        "saude": status["saude"],
    }
