"""Conversations on chips: moving them, counting them, and the stranded ones left on non-active chips.

Triggers note every chip that leaves `active` and every chip gaining an open row while not
active (stranded_chip_events, migrations/versions/0005_scale.py): the cycle checks those chips
only, and one slice of the chip-id space as a backstop (what the triggers could not see).

Every function takes the caller's Connection; the caller owns the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from orchestrator.store.schema import (
    backstop_cursor,
    chips,
    conversation_chips,
    operations,
    stranded_chip_events,
)


def move_conversations(
    conn: sa.Connection, source: str, target: str, now: datetime | sa.ColumnElement
) -> int:
    """Move every active conversation of source to target in one statement."""
    result = conn.execute(
        sa.update(conversation_chips)
        .where(conversation_chips.c.chip_id == source, conversation_chips.c.active)
        .values(chip_id=target, migrated_at=now, migrated_from=source)
    )
    return result.rowcount


def active_conversations(conn: sa.Connection, chip_id: str) -> int:
    """How many active conversations a chip serves."""
    stmt = sa.select(sa.func.count()).where(
        conversation_chips.c.chip_id == chip_id, conversation_chips.c.active
    )
    return conn.execute(stmt).scalar_one()


def chip_range(index: int, slices: int) -> tuple[str, str | None]:
    """The index-th of `slices` equal ranges of chip ids (uuids): [low, high), high None at the end."""
    if not 0 <= index < slices:
        raise ValueError(f"slice {index} outside 0..{slices - 1}")
    low = str(uuid.UUID(int=index * 2**128 // slices))
    high = None if index == slices - 1 else str(uuid.UUID(int=(index + 1) * 2**128 // slices))
    return low, high


def stranded_in_range_query(limit: int, index: int, slices: int) -> sa.Select:
    """Up to limit chips that are not active holding open rows, among one slice of chip ids.

    The backstop. The slice's open rows come off the partial index (a range scan), then each
    chip holding some is looked up by primary key: the cost follows the rows in the slice, and the
    shape holds under a generic plan (a join planned for a range of unknown size can scan chips
    row by row).
    """
    cc = conversation_chips
    low, high = chip_range(index, slices)
    holders = sa.select(cc.c.chip_id).where(cc.c.active, cc.c.chip_id >= low)
    if high is not None:
        holders = holders.where(cc.c.chip_id < high)
    holders = holders.group_by(cc.c.chip_id).subquery("holders")
    status = sa.select(chips.c.status).where(chips.c.id == holders.c.chip_id).scalar_subquery()
    return (
        sa.select(holders.c.chip_id)
        .where(status != "active")
        .order_by(holders.c.chip_id)
        .limit(limit)
    )


def stranded_in_range(conn: sa.Connection, limit: int, index: int, slices: int) -> list[str]:
    """Run stranded_in_range_query: the backstop's finds in one slice."""
    return list(conn.execute(stranded_in_range_query(limit, index, slices)).scalars())


def backstop_position(conn: sa.Connection) -> int:
    """Where the backstop's rotation is: the cycle reads slice `position % slices` (0 if unset)."""
    position = conn.execute(
        sa.select(backstop_cursor.c.position).where(backstop_cursor.c.id == 1)
    ).scalar()
    return int(position or 0)


def advance_backstop(conn: sa.Connection, seen: int) -> bool:
    """Move the rotation on from `seen` (the position a cycle read); False if another did first.

    Compare-and-set: two cycles that read the same position (a lost cycle guard) move it once.
    """
    stmt = pg_insert(backstop_cursor).values(id=1, position=seen + 1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[backstop_cursor.c.id],
        set_={"position": stmt.excluded.position},
        where=backstop_cursor.c.position == seen,
    )
    return conn.execute(stmt.returning(backstop_cursor.c.position)).first() is not None


def _holds_stranded_rows(chip_id: sa.ColumnElement) -> sa.ColumnElement[bool]:
    """The chip exists, is not active, and has open conversations."""
    cc = conversation_chips
    return sa.and_(
        sa.exists().where(chips.c.id == chip_id, chips.c.status != "active"),
        sa.exists().where(cc.c.chip_id == chip_id, cc.c.active),
    )


def noted_stranded_query(cap: int) -> sa.Select:
    """The first `cap` notes (id, chip_id), each with whether its chip holds stranded rows."""
    events = stranded_chip_events
    notes = (
        sa.select(events.c.id, events.c.chip_id).order_by(events.c.id).limit(cap).subquery("notes")
    )
    noted = sa.select(notes.c.chip_id).distinct().subquery("noted")
    judged = sa.select(
        noted.c.chip_id, _holds_stranded_rows(noted.c.chip_id).label("stranded")
    ).subquery("judged")
    return sa.select(notes.c.id, notes.c.chip_id, judged.c.stranded).join(
        judged, judged.c.chip_id == notes.c.chip_id
    )


def noted_stranded(conn: sa.Connection, cap: int) -> tuple[list[str], list[tuple[int, str]]]:
    """From the first `cap` notes: the noted chips that hold stranded rows (sorted), and the notes
    (id, chip) of the others, which the cycle may settle."""
    rows = conn.execute(noted_stranded_query(cap)).all()
    stranded = sorted({chip for _, chip, is_stranded in rows if is_stranded})
    return stranded, [(note, chip) for note, chip, is_stranded in rows if not is_stranded]


def settle_stranded_notes(conn: sa.Connection, notes: Sequence[tuple[int, str]]) -> int:
    """Delete notes whose chip holds no stranded row now; returns how many were deleted.

    Each chip is locked FOR UPDATE SKIP LOCKED before it is judged again: a conversation written
    from a stale read holds KEY SHARE on its chip until it commits, so a chip it is landing on is
    skipped (its notes wait for the next cycle) and nothing here ever waits.
    """
    wanted = sorted({chip for _, chip in notes})
    if not wanted:
        return 0
    locked = set(
        conn.execute(
            sa.select(chips.c.id)
            .where(chips.c.id.in_(wanted))
            .order_by(chips.c.id)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    existing = set(conn.execute(sa.select(chips.c.id).where(chips.c.id.in_(wanted))).scalars())
    still = (
        set(
            conn.execute(
                sa.select(chips.c.id).where(
                    chips.c.id.in_(sorted(locked)), _holds_stranded_rows(chips.c.id)
                )
            ).scalars()
        )
        if locked
        else set()
    )
    settled = (locked - still) | (set(wanted) - existing)
    ids = [note for note, chip in notes if chip in settled]
    if not ids:
        return 0
    events = stranded_chip_events
    return conn.execute(sa.delete(events).where(events.c.id.in_(ids))).rowcount


def note_stranded(conn: sa.Connection, chip_ids: Sequence[str]) -> None:
    """Note chips found stranded without a note (the backstop), so later cycles check them."""
    if chip_ids:
        conn.execute(sa.insert(stranded_chip_events), [{"chip_id": c} for c in chip_ids])


def stranded_conversations(conn: sa.Connection) -> int:
    """How many open conversations sit on chips that are not active (the noted chips only)."""
    cc = conversation_chips
    noted = sa.select(stranded_chip_events.c.chip_id).distinct().subquery("noted")
    stmt = (
        sa.select(sa.func.count())
        .select_from(cc.join(chips, chips.c.id == cc.c.chip_id))
        .where(
            cc.c.active, chips.c.status != "active", cc.c.chip_id.in_(sa.select(noted.c.chip_id))
        )
    )
    return conn.execute(stmt).scalar_one()


def replacement_of(conn: sa.Connection, chip_id: str) -> str | None:
    """The chip that took over chip_id in its newest successful auto_replace, if any."""
    stmt = (
        sa.select(operations.c.chip_destino_id)
        .where(
            operations.c.chip_id == chip_id,
            operations.c.operacao == "auto_replace",
            operations.c.sucesso,
            operations.c.chip_destino_id.is_not(None),
        )
        .order_by(operations.c.created_at.desc())
        .limit(1)
    )
    return conn.execute(stmt).scalar_one_or_none()
