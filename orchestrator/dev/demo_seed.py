"""A small demo pool: every status, open conversations, something for the first cycles to do,
and the weather the demo's simulator plays around it."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa

from orchestrator.dev import simulator
from orchestrator.store.schema import chips, conversation_chips, operations, pool_config

#: The demo's weather: a time-lapse warm-up (promotions within a minute; purchases age with it,
#: so the lead time measured is a warm-up's), and trust calm enough that ready chips stay fit to
#: serve (each dip below trust_min_for_ready leaves the reserve short, so a number is bought).
DEMO_KNOBS = simulator.Knobs(
    ban_rate=0.012, disconnect_rate=0.02, warmup_days_per_step=2.0, trust_drift=1.0
)

#: pool_config of the demo: small, so each change shows; a 1-minute disconnection grace.
DEMO_CONFIG = {
    "producao_min": 6,
    "producao_max": 8,
    "ready_min": 2,
    "warmup_buffer": 4,
    "warmup_days": 21,
    "disconnect_grace_minutes": 1,
    "alert_cooldown_minutes": 5,
}

#: (status, trust, days warmed, phase, conversations, extra) per seeded chip.
DEMO_CHIPS: tuple[tuple[str, float, float, str, int, dict], ...] = (
    *(
        ("active", t, 40, "operacao", n, {})
        for t, n in ((96, 5), (92, 4), (88, 6), (85, 3), (78, 2))
    ),
    ("active", 52, 35, "operacao", 4, {}),  # low trust: the first cycle replaces it
    ("ready", 94, 25, "operacao", 0, {}),
    ("ready", 89, 23, "operacao", 0, {}),
    ("warming", 90, 22, "operacao", 0, {}),  # eligible: promoted warming -> ready at once
    ("warming", 80, 15, "pre_operacao", 0, {}),
    ("warming", 70, 9, "expansao", 0, {}),
    ("warming", 40, 2, "setup", 0, {}),
    ("degraded", 45, 60, "operacao", 0, {"degraded_at_days": 1}),
    ("banned", 20, 50, "operacao", 0, {"degraded_at_days": 2}),
    ("cancelled", 15, 90, "operacao", 0, {"degraded_at_days": 10}),
)


def seed_demo_pool(engine: sa.Engine, rng: random.Random) -> int:
    """Write the demo pool_config, chips and their history into an empty pool; returns chips written."""
    with engine.begin() as conn:
        conn.execute(sa.text("LOCK TABLE chips IN EXCLUSIVE MODE"))  # two demos never both seed
        if conn.scalar(sa.select(sa.func.count()).select_from(chips)):
            return 0
        conn.execute(sa.update(pool_config).values(**DEMO_CONFIG, updated_at=sa.func.now()))
        now = conn.scalar(sa.select(sa.func.now()))
        ids: dict[str, list[str]] = {}
        for phone, (status, trust, days, phase, convs, extra) in zip(
            _phones(rng, len(DEMO_CHIPS)), DEMO_CHIPS, strict=True
        ):
            row = _row(phone, status, trust, now, days, phase, extra)
            chip_id = conn.execute(
                sa.insert(chips).values(**row).returning(chips.c.id)
            ).scalar_one()
            ids.setdefault(status, []).append(chip_id)
            _open_conversations(conn, chip_id, convs)
        _history(conn, ids, now)
    return len(DEMO_CHIPS)


def _open_conversations(conn: sa.Connection, chip_id: str, n: int) -> None:
    rows = [
        {"conversation_id": f"demo-{uuid.uuid4().hex[:12]}", "chip_id": chip_id} for _ in range(n)
    ]
    if rows:
        conn.execute(sa.insert(conversation_chips), rows)


def _history(conn: sa.Connection, ids: dict[str, list[str]], now: datetime) -> None:
    """The operations that would have left the seeded degraded, banned and cancelled chips so."""
    active = ids["active"]
    rows = [
        ("auto_replace", ids["degraded"][0], active[0], "Trust Score 45 < 60", 1),
        ("auto_replace", ids["banned"][0], active[1], "Chip banido", 2),
        ("cancel", ids["cancelled"][0], None, "Cancelado na Salvy (unnecessary)", 10),
    ]
    conn.execute(
        sa.insert(operations),
        [
            {
                "operacao": operacao,
                "chip_id": chip,
                "chip_destino_id": destino,
                "motivo": motivo,
                "metadata": {"demo_seed": True},
                "sucesso": True,
                "created_at": now - timedelta(days=days),
            }
            for operacao, chip, destino, motivo, days in rows
        ],
    )


def _phones(rng: random.Random, n: int) -> list[str]:
    numbers: set[str] = set()
    while len(numbers) < n:
        numbers.add(f"+55119{rng.randrange(10**8):08d}")
    return sorted(numbers)


def _row(
    phone: str, status: str, trust: float, now: datetime, days: float, phase: str, extra: dict
) -> dict:
    row: dict[str, object] = {
        "telefone": phone,
        "instance_name": f"demo-{phone[-4:]}",
        "ddd": 11,
        "status": status,
        "trust_score": trust,
        "fase_warmup": phase,
        "warming_started_at": now - timedelta(days=days),
        # Bought when its warm-up started: the forecast measures lead time from created_at.
        "created_at": now - timedelta(days=days),
    }
    if status in ("ready", "active"):
        row["ready_at"] = now - timedelta(days=max(0.0, days - 21))
    if status == "active":
        row["promoted_to_active_at"] = now - timedelta(days=max(0.0, days - 22))
    if "degraded_at_days" in extra:
        row["degraded_at"] = now - timedelta(days=extra["degraded_at_days"])
    return row
