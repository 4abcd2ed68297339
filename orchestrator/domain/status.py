"""The pool status shape (the seed's obter_status_pool, plus `compras`), from plain data.

The reads behind it are services/cycle.py's `pool_status` (one aggregate query).
"""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator.domain import release
from orchestrator.domain.pool import (
    Counts,
    PoolConfig,
    PurchaseGate,
    deficits,
    health,
    reserve,
    reserve_target,
)


def status_from(
    config: PoolConfig,
    counts: Counts,
    trust_medio: float | None,
    *,
    gate: PurchaseGate | None = None,
    now: datetime | None = None,
    ready_fit: int | None = None,
) -> dict:
    """The seed's obter_status_pool shape, without the chip lists (plus `compras`).

    trust_medio None (the cycle does not read it: it reads every active chip) stays None.
    """
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
        "reserva": {
            "count": reserve(counts, ready_fit),
            "alvo": reserve_target(config),
            "ready_aptos": counts.ready if ready_fit is None else ready_fit,
        },
        "saude": health(config, counts, ready_fit),
        "totais": {
            "total_chips": counts.warming + counts.ready + counts.active + counts.degraded,
            "trust_medio": None if trust_medio is None else round(trust_medio, 2),
            "em_voo": counts.provisioning,
            "banned": counts.banned,
            "banned_retidos": banned_held(config, counts, now),
            "cancelled": counts.cancelled,
        },
        "deficits": {"producao": need.producao, "ready": need.ready, "warming": need.warming},
        "compras": purchases_status(config, gate or PurchaseGate(), now),
    }


#: Why the banned numbers' monthly cost is null.
COST_UNKNOWN = "pool_config.number_monthly_cost is not set (NULL): cost unknown"


def banned_held(config: PoolConfig, counts: Counts, now: datetime | None) -> dict:
    """Banned numbers still held (billed every month until cancelled) and what they cost a month.

    `liberacao`: with auto_cancel_banned on, when the cycle next releases them (just before the
    billing month turns, domain/release.py); None while it is off (held until ops cancel them).
    """
    cost = config.number_monthly_cost
    on = config.auto_cancel_banned
    return {
        "count": counts.banned,
        "custo_mensal": None if cost is None else round(counts.banned * cost, 2),
        "custo_desconhecido": COST_UNKNOWN if cost is None else None,
        "auto_cancel_banned": on,
        "liberacao": release.next_release(now).isoformat() if on and now is not None else None,
    }


def purchases_status(config: PoolConfig, gate: PurchaseGate, now: datetime | None) -> dict:
    """Whether the cycle may buy: `estado` ativas, pausadas, sem_salvy or desligadas, and why."""
    paused = now is not None and gate.paused(now)
    if not config.auto_provision:
        estado, aviso = "desligadas", None
    elif not gate.salvy_configured:
        estado, aviso = (
            "sem_salvy",
            "auto_provision on but SALVY_API_URL not set: nothing is bought",
        )
    elif paused:
        until = f"{gate.paused_until.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        estado, aviso = "pausadas", f"purchases paused until {until} ({gate.cause})"
    elif gate.capped(config):
        frees = gate.day_window_frees_at
        until = f"{frees.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if frees else "later"
        estado = "limite_diario"
        aviso = (
            f"daily purchase cap reached ({gate.bought_last_day} of max_purchases_per_day"
            f" {config.max_purchases_per_day} in 24 h): purchases resume at {until}"
        )
    elif gate.failures:
        estado = "ativas"
        aviso = (
            f"purchases resumed after {gate.failures} failure(s) ({gate.cause}):"
            " one at a time until one succeeds"
        )
    else:
        estado, aviso = "ativas", None
    return {
        "estado": estado,
        "pausadas_ate": (
            gate.paused_until.isoformat()
            if paused
            else (
                gate.day_window_frees_at.isoformat()
                if estado == "limite_diario" and gate.day_window_frees_at
                else None
            )
        ),
        "compradas_24h": gate.bought_last_day,
        "limite_diario": config.max_purchases_per_day,
        "causa": gate.cause if gate.failures else None,
        "falhas_seguidas": gate.failures,
        "aviso": aviso,
    }
