"""Write side of the Slack outbox: messages are rows, committed with the change they describe.

Delivery (orchestrator.notify) reads them after commit, so a Slack outage neither loses an alert
nor rolls back a replacement, and a rolled-back change sends nothing.
"""

from __future__ import annotations

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
