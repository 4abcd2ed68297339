"""The deliverer's statements on the outbox: claim a batch, record what Slack said, prune.

Each takes the caller's connection (or opens one short transaction), and none is held across
a call to Slack: services/delivery.py runs them around each send.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa

from orchestrator.store.db import transaction
from orchestrator.store.schema import alert_state, outbox, pool_config


def claim_batch(engine: sa.Engine, run_id: str, n: int, lease: timedelta) -> list[sa.Row]:
    """Lease the n oldest due messages to this run and commit; oldest first."""
    now = sa.func.now()
    cand, older = outbox.alias("cand"), outbox.alias("older")
    waiting_ahead = sa.exists().where(
        older.c.delivered_at.is_(None),
        older.c.canal == cand.c.canal,
        older.c.id < cand.c.id,
        sa.or_(older.c.next_attempt_at > now, older.c.claimed_until > now),
    )
    due = (
        sa.select(cand.c.id)
        .where(
            cand.c.delivered_at.is_(None),
            cand.c.next_attempt_at <= now,
            sa.or_(cand.c.claimed_until.is_(None), cand.c.claimed_until <= now),
            ~waiting_ahead,
        )
        .order_by(cand.c.id)
        .limit(n)
        .with_for_update(skip_locked=True)
    )
    claim = (
        sa.update(outbox)
        .where(outbox.c.id.in_(due.scalar_subquery()))
        .values(claimed_until=now + lease, claimed_by=run_id)
        .returning(outbox.c.id, outbox.c.canal, outbox.c.texto, outbox.c.attempts)
    )
    with transaction(engine) as conn:
        return sorted(conn.execute(claim).all(), key=lambda row: row.id)


def record_attempt(conn: sa.Connection, row_id: int, error: str, code: str) -> None:
    """A failed attempt: counted, its error kept, the lease given back."""
    conn.execute(
        sa.update(outbox)
        .where(outbox.c.id == row_id)
        .values(
            attempts=outbox.c.attempts + 1,
            last_error=error,
            last_error_code=code,
            last_attempt_at=sa.func.now(),
            claimed_until=None,
            claimed_by=None,
        )
    )


def mark_delivered(
    conn: sa.Connection, row_id: int, via: str, error: tuple[str, str] | None = None
) -> None:
    """Delivered via `via` (slack, log); error: (reason, code) of a refusal it was logged for."""
    errors = {}
    if error is not None:
        errors = {"last_error": error[0], "last_error_code": error[1]}
    conn.execute(
        sa.update(outbox)
        .where(outbox.c.id == row_id)
        .values(
            delivered_at=sa.func.now(),
            delivered_via=via,
            attempts=outbox.c.attempts + 1,
            last_attempt_at=sa.func.now(),
            claimed_until=None,
            claimed_by=None,
            **errors,
        )
    )


def hold(conn: sa.Connection, canal: str | None, wait: timedelta) -> None:
    """Every pending message of canal (None: of every canal) waits at least `wait` from now."""
    stmt = (
        sa.update(outbox)
        .where(outbox.c.delivered_at.is_(None))
        .values(
            next_attempt_at=sa.func.greatest(outbox.c.next_attempt_at, sa.func.now() + wait),
            claimed_until=None,
            claimed_by=None,
        )
    )
    conn.execute(stmt if canal is None else stmt.where(outbox.c.canal == canal))


def pending_in(conn: sa.Connection, canal: str | None) -> int:
    """Messages waiting in canal (None: in every canal)."""
    query = sa.select(sa.func.count()).where(outbox.c.delivered_at.is_(None))
    return conn.execute(query if canal is None else query.where(outbox.c.canal == canal)).scalar()


def alert_cooldown(conn: sa.Connection, default: timedelta) -> timedelta:
    """The pool's alert cool-down (pool_config), or default when it has none."""
    minutes = conn.execute(sa.select(pool_config.c.alert_cooldown_minutes)).scalar()
    return default if minutes is None else timedelta(minutes=minutes)


def forget_alerts(conn: sa.Connection, prefixes: Sequence[str]) -> list[str]:
    """Delete the alert_state keys under any of the prefixes; the last `:` part of each."""
    keys = sa.or_(*(alert_state.c.key.startswith(p, autoescape=True) for p in prefixes))
    gone = conn.execute(sa.delete(alert_state).where(keys).returning(alert_state.c.key)).scalars()
    return sorted(key.rsplit(":", 1)[1] for key in gone)


def prune_delivered(engine: sa.Engine, *, older_than: timedelta, limit: int) -> int:
    """Delete up to `limit` messages delivered more than `older_than` ago; how many went."""
    old = outbox.alias("old")
    ids = sa.select(old.c.id).where(old.c.delivered_at < sa.func.now() - older_than).limit(limit)
    with transaction(engine) as conn:
        return conn.execute(
            sa.delete(outbox).where(outbox.c.id.in_(ids.scalar_subquery()))
        ).rowcount


def release(conn: sa.Connection, run_id: str) -> None:
    """Give back the leases of the run's messages that it did not settle."""
    conn.execute(
        sa.update(outbox)
        .where(outbox.c.claimed_by == run_id, outbox.c.delivered_at.is_(None))
        .values(claimed_until=None, claimed_by=None)
    )
