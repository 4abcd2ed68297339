"""What the gateway's and the provider's webhooks touch: chips by instance or Salvy id, each
chip's gateway clock (domain/event_clock.py), the connection flag, and the drops the trigger logs
(flapping).

Every function takes the caller's Connection; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from orchestrator.domain.event_clock import EventClock
from orchestrator.store.schema import chip_disconnect_events, chip_webhook_state, chips, pool_config

#: The window flap_max_per_hour counts drops in.
FLAP_WINDOW = timedelta(hours=1)
#: Drops older than this are pruned by the cycle (twice the window: nothing counted is lost).
FLAP_KEEP = 2 * FLAP_WINDOW
#: Rows pruned per cycle at most (the next cycle takes the rest).
PRUNE_BATCH = 10_000


def _one_chip_query(where: sa.ColumnElement[bool]) -> sa.Select:
    # An instance name may be reused by a newer chip: the one still in service wins, then the newest.
    return (
        sa.select(chips)
        .where(where)
        .order_by((chips.c.status == "cancelled").asc(), chips.c.created_at.desc())
        .limit(1)
    )


def _one_chip(conn: sa.Connection, where: sa.ColumnElement[bool], lock: bool) -> Mapping | None:
    stmt = _one_chip_query(where)
    if lock:
        stmt = stmt.with_for_update(of=chips)
    return conn.execute(stmt).mappings().first()


def chip_by_salvy_id(conn: sa.Connection, salvy_id: str, *, lock: bool = False) -> Mapping | None:
    """The chip of Salvy's phoneAccountId, or None."""
    return _one_chip(conn, chips.c.salvy_id == salvy_id, lock)


def chip_for_event(
    conn: sa.Connection, instance: str
) -> tuple[Mapping, EventClock | None, datetime] | None:
    """The instance's chip, row-locked, with its gateway clock and the database's now().

    One statement (the receiver's hot path). The row lock makes one chip's events apply one at a
    time, so placing an event and keeping its clock cannot interleave. None: unknown instance.
    """
    state = chip_webhook_state
    stmt = (
        _one_chip_query(chips.c.instance_name == instance)
        .outerjoin(state, state.c.chip_id == chips.c.id)
        .add_columns(state.c.last_event_at, state.c.clock_offset, sa.func.now().label("db_now"))
        .with_for_update(of=chips)
    )
    row = conn.execute(stmt).mappings().first()
    if row is None:
        return None
    chip = {c.name: row[c] for c in chips.c}
    applied = row[state.c.last_event_at]
    clock = None if applied is None else EventClock(applied, row[state.c.clock_offset])
    return chip, clock, row["db_now"]


def save_event_clock(conn: sa.Connection, chip_id: str, clock: EventClock) -> None:
    """Keep the chip's gateway clock (the caller holds the chip's row lock)."""
    values = {"last_event_at": clock.applied_at, "clock_offset": clock.offset}
    stmt = insert(chip_webhook_state).values(chip_id=chip_id, **values)
    conn.execute(
        stmt.on_conflict_do_update(index_elements=[chip_webhook_state.c.chip_id], set_=values)
    )


def flap_threshold_and_drops(conn: sa.Connection, chip_id: str) -> tuple[int, int]:
    """pool_config.flap_max_per_hour and the chip's drops within the last hour, in one query."""
    drops = sa.select(sa.func.count()).where(
        chip_disconnect_events.c.chip_id == chip_id, chip_disconnect_events.c.at > _since()
    )
    stmt = sa.select(pool_config.c.flap_max_per_hour, drops.scalar_subquery()).limit(1)
    row = conn.execute(stmt).first()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def set_connected(conn: sa.Connection, chip_id: str, connected: bool) -> bool:
    """Flip evolution_connected (the triggers stamp the time and log a drop); False if unchanged."""
    stmt = (
        sa.update(chips)
        .where(chips.c.id == chip_id, chips.c.evolution_connected.is_distinct_from(connected))
        .values(evolution_connected=connected)
        .returning(chips.c.id)
    )
    return conn.execute(stmt).first() is not None


def _since() -> sa.ColumnElement:
    return sa.func.now() - FLAP_WINDOW


def recent_drops(conn: sa.Connection, chip_id: str) -> int:
    """The chip's drops within the last hour (index on (chip_id, at))."""
    stmt = sa.select(sa.func.count()).where(
        chip_disconnect_events.c.chip_id == chip_id, chip_disconnect_events.c.at > _since()
    )
    return int(conn.execute(stmt).scalar_one())


def flapping_active(conn: sa.Connection, threshold: int, limit: int = 500) -> list[str]:
    """Active chips with at least `threshold` drops within the last hour (none when 0: off).

    Reads only the last hour's drops (index on (at)), then those chips' rows.
    """
    if threshold <= 0:
        return []
    counted = (
        sa.select(chip_disconnect_events.c.chip_id)
        .where(chip_disconnect_events.c.at > _since())
        .group_by(chip_disconnect_events.c.chip_id)
        .having(sa.func.count() >= threshold)
        .subquery()
    )
    stmt = (
        sa.select(chips.c.id)
        .join(counted, counted.c.chip_id == chips.c.id)
        .where(chips.c.status == "active")
        .order_by(chips.c.id)
        .limit(limit)
    )
    return [str(chip_id) for chip_id in conn.execute(stmt).scalars()]


def prune_disconnect_events(conn: sa.Connection) -> int:
    """Delete drops older than FLAP_KEEP (a batch at a time); how many went."""
    old = (
        sa.select(chip_disconnect_events.c.id)
        .where(chip_disconnect_events.c.at < sa.func.now() - FLAP_KEEP)
        .limit(PRUNE_BATCH)
        .scalar_subquery()
    )
    done = conn.execute(
        sa.delete(chip_disconnect_events).where(chip_disconnect_events.c.id.in_(old))
    )
    return done.rowcount
