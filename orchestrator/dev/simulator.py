"""Plays the services around the orchestrator: trust scoring, warm-up, the WhatsApp gateway,
ban detection and the conversations router. Plain functions over an engine, no Celery.

Each change is what those services really write (trust_score, fase_warmup, evolution_connected,
status 'banned', conversation_chips rows), one small transaction each, re-checking the chip's
status in the WHERE clause so a concurrent replace never meets a half-written row. Used by the
demo and by the chaos soak; `Knobs` sets how rough the weather is.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from orchestrator.domain.messages import phone
from orchestrator.store.schema import chips, conversation_chips

#: send(task_name, args, kwargs): how a ban-detecting service tells the orchestrator.
Send = Callable[[str, list, dict], object]

#: Warm-up phases written by the warm-up service, in order; promotion needs the last one.
PHASES = ("setup", "primeiros_contatos", "expansao", "pre_operacao", "operacao")
#: Where trust scores settle when nothing happens, per status.
TRUST_TARGET = {"warming": 92.0, "ready": 90.0, "active": 84.0}


@dataclass(frozen=True)
class Knobs:
    """How much happens per step (rates are per chip per step)."""

    ban_rate: float = 0.01  #: active chip banned by WhatsApp
    disconnect_rate: float = 0.02  #: active chip drops off the gateway
    reconnect_rate: float = 0.08  #: disconnected chip comes back
    trust_crash_rate: float = 0.01  #: active chip's trust falls below the degraded threshold
    trust_drift: float = 2.0  #: standard deviation of trust noise per step
    arrivals: int = 3  #: at most this many new conversations per step
    close_rate: float = 0.05  #: fraction of open conversations closed per step
    #: demo time-lapse: warm-up days that pass per step (warming_started_at and created_at move
    #: back together)
    warmup_days_per_step: float = 0.0
    outage: bool = False  #: gateway outage: most active chips disconnect, none come back
    sample: int = 50  #: at most this many chips looked at per kind of change


def step(engine: sa.Engine, rng: random.Random, send: Send, knobs: Knobs = Knobs()) -> list[str]:
    """One tick of the world around the orchestrator; returns what happened, one line each."""
    events: list[str] = []
    events += _warm_up(engine, rng, knobs)
    events += _drift_trust(engine, rng, knobs)
    events += _gateway(engine, rng, knobs)
    events += _bans(engine, rng, send, knobs)
    events += _conversations(engine, rng, knobs)
    return events


def _pick(engine: sa.Engine, where: sa.ColumnElement, limit: int) -> list[sa.RowMapping]:
    cols = (chips.c.id, chips.c.telefone, chips.c.status, chips.c.trust_score)
    stmt = sa.select(*cols, chips.c.fase_warmup, chips.c.warming_started_at).where(where)
    with engine.connect() as conn:
        return list(conn.execute(stmt.order_by(sa.func.random()).limit(limit)).mappings())


def _set(engine: sa.Engine, chip_id: str, expected: str, **values: object) -> bool:
    """Compare-and-set as the other services do: only while the chip is still in `status`."""
    stmt = (
        sa.update(chips).where(chips.c.id == chip_id, chips.c.status == expected).values(**values)
    )
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount == 1


def _phone(row: sa.RowMapping) -> str:
    """As every other line of the demo's screen writes a number (+55 11 91234-5678)."""
    return phone(row["telefone"]) if row["telefone"] else str(row["id"])[:8]


def _warm_up(engine: sa.Engine, rng: random.Random, knobs: Knobs) -> list[str]:
    """Warming chips age (time-lapse), gain trust and move through the warm-up phases."""
    with engine.connect() as conn:
        now, days = conn.execute(sa.text("SELECT now(), warmup_days FROM pool_config")).one()
    events = []
    for row in _pick(engine, chips.c.status == "warming", knobs.sample):
        started = row["warming_started_at"]
        values: dict[str, object] = {}
        if started is not None and knobs.warmup_days_per_step:
            lapse = timedelta(days=knobs.warmup_days_per_step)
            started = started - lapse
            values["warming_started_at"] = started
            # The purchase ages with the warm-up, so the lead time measured from created_at to
            # ready_at is the warm-up's (not the seconds the time-lapse really took).
            values["created_at"] = chips.c.created_at - lapse
        phase = phase_for(now - started if started else None, days)
        if PHASES.index(phase) > PHASES.index(row["fase_warmup"] or PHASES[0]):
            values["fase_warmup"] = phase
            events.append(f"aquecimento: {_phone(row)} passou para a fase {phase}")
        values["trust_score"] = _nudge(rng, row["trust_score"], "warming", knobs, lift=3.0)
        _set(engine, row["id"], "warming", **values)
    return events


def phase_for(age: timedelta | None, warmup_days: int) -> str:
    """The warm-up phase for a chip warmed for `age`: the last one once warmup_days have passed."""
    if age is None:
        return PHASES[0]
    progress = age / timedelta(days=max(1, warmup_days))
    return PHASES[max(0, min(len(PHASES) - 1, int(progress * (len(PHASES) - 1))))]


def _nudge(rng: random.Random, trust: float, status: str, knobs: Knobs, lift: float = 0.0) -> float:
    """Noise around a target, pulled back toward it; always within 0..100."""
    pull = 0.1 * (TRUST_TARGET[status] - trust)
    return round(
        min(100.0, max(0.0, trust + pull + lift * rng.random() + rng.gauss(0, knobs.trust_drift))),
        1,
    )


def _drift_trust(engine: sa.Engine, rng: random.Random, knobs: Knobs) -> list[str]:
    """Trust of ready and active chips wanders; now and then an active chip's trust crashes."""
    events = []
    for row in _pick(engine, chips.c.status.in_(["ready", "active"]), knobs.sample):
        trust = _nudge(rng, row["trust_score"], row["status"], knobs)
        if row["status"] == "active" and rng.random() < knobs.trust_crash_rate:
            trust = round(rng.uniform(30, 55), 1)
            events.append(f"trust: {_phone(row)} caiu para {trust:g} (denuncias de spam)")
        _set(engine, row["id"], row["status"], trust_score=trust)
    return events


def _gateway(engine: sa.Engine, rng: random.Random, knobs: Knobs) -> list[str]:
    """The WhatsApp gateway flips evolution_connected (the database records since when)."""
    events = []
    drop = 0.8 if knobs.outage else knobs.disconnect_rate
    for row in _pick(
        engine, (chips.c.status == "active") & chips.c.evolution_connected, knobs.sample
    ):
        if rng.random() < drop and _set(engine, row["id"], "active", evolution_connected=False):
            events.append(f"gateway: {_phone(row)} desconectou")
    if knobs.outage:
        return events
    offline = sa.not_(chips.c.evolution_connected) & chips.c.status.in_(
        ["active", "degraded", "ready"]
    )
    for row in _pick(engine, offline, knobs.sample):
        if rng.random() < knobs.reconnect_rate and _set(
            engine, row["id"], row["status"], evolution_connected=True
        ):
            events.append(f"gateway: {_phone(row)} reconectou")
    return events


def _bans(engine: sa.Engine, rng: random.Random, send: Send, knobs: Knobs) -> list[str]:
    """WhatsApp bans a number; the ban detector marks it and asks for a replacement at once."""
    events = []
    for row in _pick(engine, chips.c.status == "active", knobs.sample):
        if rng.random() < knobs.ban_rate and _set(engine, row["id"], "active", status="banned"):
            send("orchestrator.replace_chip", [str(row["id"])], {"reason": "banned"})
            events.append(f"ban: {_phone(row)} banido pelo WhatsApp; replace_chip enviado")
    return events


def _conversations(engine: sa.Engine, rng: random.Random, knobs: Knobs) -> list[str]:
    """New conversations land on connected active chips; some open ones close."""
    arriving = rng.randint(0, knobs.arrivals)
    opened = closed = 0
    with engine.begin() as conn:
        if arriving:
            # FOR SHARE: a replace of this chip waits for us, then moves these rows too.
            targets = conn.execute(
                sa.select(chips.c.id)
                .where(chips.c.status == "active", chips.c.evolution_connected)
                .order_by(sa.func.random())
                .limit(arriving)
                .with_for_update(read=True, skip_locked=True)
            ).scalars()
            rows = [
                {"conversation_id": f"demo-{uuid.uuid4().hex[:12]}", "chip_id": c} for c in targets
            ]
            if rows:
                conn.execute(sa.insert(conversation_chips), rows)
            opened = len(rows)
        open_now = conn.scalar(sa.select(sa.func.count()).where(conversation_chips.c.active)) or 0
        to_close = sum(1 for _ in range(min(open_now, 200)) if rng.random() < knobs.close_rate)
        if to_close:
            ids = (
                sa.select(conversation_chips.c.id)
                .where(conversation_chips.c.active)
                .order_by(sa.func.random())
                .limit(to_close)
                .scalar_subquery()
            )
            closed = conn.execute(
                sa.update(conversation_chips)
                .where(conversation_chips.c.id.in_(ids))
                .values(active=False)
            ).rowcount
    if not (opened or closed):
        return []
    return [f"conversas: +{opened} novas, {closed} encerradas"]
