"""The Slack outbox: messages are rows, committed with the change they describe.

Writes (enqueue, alert cool-downs) and the backlog as metrics read it. Delivery
(services/delivery.py, its statements in store/outbox_delivery.py) reads them after commit, so a Slack outage neither loses an alert
nor rolls back a replacement, and a rolled-back change sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from orchestrator.store.schema import alert_state, outbox

#: The seed's two Slack destinations.
CANAIS = ("alertas", "operacoes")


def enqueue(conn: sa.Connection, canal: str, texto: str) -> int:
    """Queue one message in the caller's transaction; returns its outbox id."""
    if canal not in CANAIS:
        raise ValueError(f"unknown canal {canal!r}")
    return conn.execute(
        sa.insert(outbox).values(canal=canal, texto=texto).returning(outbox.c.id)
    ).scalar_one()


def claim(conn: sa.Connection, key: str, *, cooldown: timedelta | None = None) -> bool:
    """True if this alert key is due: never seen, or last sent longer than cooldown ago.

    The check and the claim are one statement (INSERT .. ON CONFLICT .. WHERE), so two workers
    racing on the same key get one True between them. cooldown None: only ever once.
    """
    stmt = pg_insert(alert_state).values(key=key, last_sent_at=sa.func.now(), times_sent=1)
    if cooldown is None:
        stmt = stmt.on_conflict_do_nothing(index_elements=[alert_state.c.key])
    else:
        stmt = stmt.on_conflict_do_update(
            index_elements=[alert_state.c.key],
            set_={"last_sent_at": sa.func.now(), "times_sent": alert_state.c.times_sent + 1},
            where=alert_state.c.last_sent_at <= sa.func.now() - cooldown,
        )
    return conn.execute(stmt.returning(alert_state.c.key)).first() is not None


def alert_once(
    conn: sa.Connection, key: str, texto: str, *, cooldown: timedelta | None, canal: str = "alertas"
) -> bool:
    """Queue an alert unless the same key was sent within cooldown (None: only ever once)."""
    claimed = claim(conn, key, cooldown=cooldown)
    if claimed:
        enqueue(conn, canal, texto)
    return claimed


def forget_alert(conn: sa.Connection, key: str) -> None:
    """Allow a once-only alert to fire again (e.g. the chip was replaced after all)."""
    conn.execute(sa.delete(alert_state).where(alert_state.c.key == key))


def pending_count(engine: sa.Engine) -> int:
    """How many messages wait for delivery."""
    query = sa.select(sa.func.count()).select_from(outbox).where(outbox.c.delivered_at.is_(None))
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def oldest_pending_age_seconds(engine: sa.Engine) -> float | None:
    """Age of the oldest undelivered message in seconds; None when nothing is pending."""
    age = sa.func.extract("epoch", sa.func.now() - sa.func.min(outbox.c.created_at))
    query = sa.select(age).where(outbox.c.delivered_at.is_(None))
    with engine.connect() as conn:
        value = conn.execute(query).scalar_one()
    return None if value is None else float(value)


@dataclass(frozen=True)
class OutboxReading:
    """The outbox as the metrics show it."""

    pending: int
    oldest_pending_seconds: float  # 0 when nothing is pending
    last_errors: dict[str, str]  # canal -> error code of its last failed attempt, while pending
    last_delivered_at: float | None  # unix time of the newest delivery


def read_outbox(engine: sa.Engine) -> OutboxReading:
    """Backlog, its age, the errors holding it and the last delivery, in three small queries."""
    pending = outbox.c.delivered_at.is_(None)
    age = sa.func.extract("epoch", sa.func.now() - sa.func.min(outbox.c.created_at))
    last = (
        sa.select(outbox.c.canal, outbox.c.last_error_code)
        .where(pending, outbox.c.last_attempt_at.is_not(None))
        .order_by(outbox.c.canal, outbox.c.last_attempt_at.desc())
        .distinct(outbox.c.canal)
    )
    delivered = sa.select(sa.func.extract("epoch", sa.func.max(outbox.c.delivered_at)))
    with engine.connect() as conn:
        count, oldest = conn.execute(sa.select(sa.func.count(), age).where(pending)).one()
        errors = {canal: code for canal, code in conn.execute(last) if code}
        last_delivered = conn.execute(delivered).scalar()
    return OutboxReading(
        pending=count,
        oldest_pending_seconds=float(oldest or 0.0),
        last_errors=errors,
        last_delivered_at=None if last_delivered is None else float(last_delivered),
    )
