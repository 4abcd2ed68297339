"""A pool's history written straight to the database, with a known rate, lead time and loss."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa

from orchestrator.store.schema import chips, operations
from tests.factories import phone


def db_now(engine: sa.Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.now())).scalar_one()


def make_history(
    engine: sa.Engine,
    *,
    days: float = 60,
    per_day: float = 4,
    reasons: tuple[str, ...] = ("banned", "banned", "banned", "low_trust"),
    lead_days: float = 23,
    jitter_days: float = 1,
    buys_per_day: float = 4,
    buy_days: float = 90,
    lost_every: int = 10,
) -> dict:
    """Replacements evenly spaced over the last `days` (reasons in turn), and purchases over the
    last `buy_days`: every `lost_every`-th is lost while warming, the others become ready
    lead_days (+- jitter, symmetric) after their purchase, if that is in the past."""
    now = db_now(engine)
    ops: list[dict] = []
    step = timedelta(days=1 / per_day)
    start = now - timedelta(days=days)
    n_replacements = round(days * per_day)
    for i in range(n_replacements):
        reason = reasons[i % len(reasons)]
        ops.append(
            {
                "operacao": "auto_replace",
                "motivo": f"teste {reason}",
                "metadata": {"reason": reason},
                "sucesso": True,
                "created_at": start + step * (i + 0.5),
            }
        )
    rows, lost = [], 0
    buy_step = timedelta(days=1 / buys_per_day)
    for i in range(round(buy_days * buys_per_day)):
        bought = now - timedelta(days=buy_days) + buy_step * (i + 0.5)
        chip = {"id": str(uuid.uuid4()), "telefone": phone(), "ddd": 11, "trust_score": 90}
        chip.update(created_at=bought, fase_warmup="operacao", warming_started_at=bought)
        jitter = timedelta(days=jitter_days * ((i % 3) - 1))  # -j, 0, +j in turn
        ready_at = bought + timedelta(days=lead_days) + jitter
        if i % lost_every == 0:
            chip.update(status="banned", degraded_at=bought + timedelta(days=lead_days / 2))
            lost += 1
        elif ready_at < now:
            chip.update(status="ready", ready_at=ready_at)
            ops.append(_op("promotion_warming_ready", chip["id"], ready_at))
        else:
            chip.update(status="warming")
        rows.append(chip)
        ops.append(_op("auto_provision", chip["id"], bought + timedelta(minutes=1)))
    with engine.begin() as conn:
        for status in ("banned", "ready", "warming"):
            batch = [r for r in rows if r["status"] == status]
            if batch:
                conn.execute(sa.insert(chips), _uniform(batch))
        conn.execute(sa.insert(operations), _uniform(ops))
    return {"now": now, "replacements": n_replacements, "bought": len(rows), "lost": lost}


def _op(operacao: str, chip_id: str, at: datetime) -> dict:
    return {
        "operacao": operacao,
        "chip_id": chip_id,
        "motivo": "teste",
        "metadata": {},
        "sucesso": True,
        "created_at": at,
    }


def _uniform(rows: list[dict]) -> list[dict]:
    """Every row with every key (executemany needs one shape)."""
    keys = sorted({k for r in rows for k in r})
    return [{k: r.get(k) for k in keys} for r in rows]
