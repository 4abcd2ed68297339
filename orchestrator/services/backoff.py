"""Purchase back-off: after a failed purchase the cycle buys nothing for a while.

The pause grows while failures persist (pool.backoff_minutes: 1, 2, 4, ... capped at 30 min)
and a success ends it. Ops get one alert per cause (out of stock, refused token, other) per
the pool's alert cool-down, not one per failed attempt. The state is one row of
`purchase_backoff`; every function here runs in the caller's transaction.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from orchestrator.domain import messages
from orchestrator.domain.pool import (
    OTHER,
    OUT_OF_STOCK,
    REFUSED_TOKEN,
    PurchaseGate,
    backoff_minutes,
)
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.schema import pool_config, purchase_backoff

#: The one row of purchase_backoff.
SCOPE = "purchasing"
#: Error codes (Rejected.code) per back-off cause; anything else is OTHER.
CAUSE_OF_CODE = {
    "out_of_stock": OUT_OF_STOCK,
    "area_code_unavailable": OUT_OF_STOCK,
    "refused_token": REFUSED_TOKEN,
}
#: Alert key of "max_purchases_per_day reached" (once per 24 hours).
DAILY_CAP_KEY = "purchase:daily_cap"
#: Alert key of "auto_provision on but SALVY_API_URL not set" (sent once).
NO_SALVY_KEY = "purchase:no_salvy_url"


def cause_of(code: str | None) -> str:
    """The back-off cause of a failed purchase's error code."""
    return CAUSE_OF_CODE.get(code or "", OTHER)


def alert_key(cause: str) -> str:
    """The alert_state key of one cause (one alert per cause per cool-down)."""
    return f"purchase:{cause}"


def load(conn: sa.Connection, *, salvy_configured: bool = True) -> PurchaseGate:
    """The purchase gate as stored (no row: purchases open), with the last 24 hours' purchases."""
    row = (
        conn.execute(sa.select(purchase_backoff).where(purchase_backoff.c.scope == SCOPE))
        .mappings()
        .first()
    )
    bought, frees_at = repo.purchases_last_day(conn)
    day = {"bought_last_day": bought, "day_window_frees_at": frees_at}
    if row is None:
        return PurchaseGate(salvy_configured=salvy_configured, **day)
    return PurchaseGate(
        salvy_configured=salvy_configured,
        paused_until=row["paused_until"],
        cause=row["cause"],
        failures=row["failures"],
        **day,
    )


def alert_daily_cap(conn: sa.Connection, gate: PurchaseGate, cap: int) -> bool:
    """max_purchases_per_day used up while the reserve is short: tell ops once per window."""
    text = messages.daily_purchase_cap(cap, gate.day_window_frees_at)
    return outbox.alert_once(conn, DAILY_CAP_KEY, text, cooldown=timedelta(hours=24))


def record_failure(conn: sa.Connection, cause: str, erro: str) -> PurchaseGate:
    """Pause purchases after a failure (longer each time) and alert once per cause per cool-down.

    Failures of purchases already under way when the pause began (siblings of one cycle) do not
    grow it: one failed batch is one step of the back-off.
    """
    conn.execute(pg_insert(purchase_backoff).values(scope=SCOPE).on_conflict_do_nothing())
    row = (
        conn.execute(
            sa.select(purchase_backoff, sa.func.now().label("now"))
            .where(purchase_backoff.c.scope == SCOPE)
            .with_for_update()
        )
        .mappings()
        .one()
    )
    now, failures, until = row["now"], row["failures"], row["paused_until"]
    if until is None or until <= now:
        failures += 1
        until = now + timedelta(minutes=backoff_minutes(failures))
    conn.execute(
        sa.update(purchase_backoff)
        .where(purchase_backoff.c.scope == SCOPE)
        .values(
            cause=cause,
            failures=failures,
            paused_until=until,
            last_error=erro[:500],
            updated_at=sa.func.now(),
        )
    )
    cooldown = alert_cooldown(conn)
    text = messages.purchases_paused(cause, until, failures, erro)
    outbox.alert_once(conn, alert_key(cause), text, cooldown=cooldown)
    return PurchaseGate(paused_until=until, cause=cause, failures=failures)


def record_success(conn: sa.Connection) -> None:
    """A purchase went through: purchases are open again, at full speed."""
    conn.execute(
        sa.update(purchase_backoff)
        .where(purchase_backoff.c.scope == SCOPE, purchase_backoff.c.failures > 0)
        .values(failures=0, paused_until=None, cause=None, updated_at=sa.func.now())
    )


def alert_no_salvy(conn: sa.Connection) -> bool:
    """Tell ops once that auto_provision is on but nothing can be bought (no SALVY_API_URL)."""
    return outbox.alert_once(conn, NO_SALVY_KEY, messages.no_salvy_url(), cooldown=None)


def forget_no_salvy(conn: sa.Connection) -> None:
    """Salvy is configured (again): a later loss of SALVY_API_URL alerts again."""
    outbox.forget_alert(conn, NO_SALVY_KEY)


def alert_cooldown(conn: sa.Connection) -> timedelta:
    """The pool's alert cool-down (30 min without a pool_config row)."""
    minutes = conn.execute(sa.select(pool_config.c.alert_cooldown_minutes)).scalar()
    return timedelta(minutes=30 if minutes is None else int(minutes))
