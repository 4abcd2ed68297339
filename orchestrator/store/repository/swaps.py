"""A swap's reads and writes, in as few statements as the rules allow (each one a round trip).

Three statements: BEGIN with the chip's status, pool_config, the active count and the chip's
row locked (with a growth slot first for a banned chip); the best ready chip locked with the
active count read after every lock; then both chips' compare-and-set, the conversations moved,
the operation row, its Slack message and the alert reset, sent with the COMMIT. Each is built
once, at import, and run by psycopg (store/pipelined.py): built per call, a statement costs
more Python than its round trip. Every function takes the caller's Connection; the caller owns
the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from psycopg.errors import DivisionByZero
from psycopg.types.json import Jsonb
from sqlalchemy.dialects import postgresql

from orchestrator.domain.pool import PoolConfig
from orchestrator.errors import Rejected
from orchestrator.store import pipelined
from orchestrator.store.repository.candidates import fit_ready_clauses
from orchestrator.store.repository.counts import active_sum, config_from_row
from orchestrator.store.schema import (
    alert_state,
    chips,
    conversation_chips,
    operations,
    outbox,
    pool_config,
    pool_growth_slots,
)

_CHIP_ID = sa.bindparam("chip_id")
UUID_TEXT = postgresql.UUID(as_uuid=False)

#: Prefix of the locked chip's columns in lock_first's row (pool_config has `id` too).
_CHIP = "chip__"
_CHIP_COLUMNS = tuple(column.name for column in chips.c)


def _lock_first_query() -> sa.Select:
    status = sa.select(chips.c.status).where(chips.c.id == _CHIP_ID).cte("chip_status")
    active = sa.select(active_sum().scalar_subquery().label("n")).cte("active")
    banned = sa.select(status.c.status).scalar_subquery() == "banned"
    room = sa.select(pool_config.c.producao_max).scalar_subquery() - sa.bindparam("slot_margin")
    slot = (
        sa.select(pool_growth_slots.c.slot)
        .where(banned, sa.select(active.c.n).scalar_subquery() <= room)
        .order_by(pool_growth_slots.c.slot)
        .limit(1)
        .with_for_update(skip_locked=True)
        .cte("slot")
    )
    locked = (
        sa.select(chips)
        .where(chips.c.id == _CHIP_ID, sa.or_(sa.not_(banned), sa.exists(sa.select(slot.c.slot))))
        .with_for_update(of=chips)
        .cte("locked")
    )
    # pool_config read where it is used, not as a CTE of its own: its column list twice would
    # take the SQL past what psycopg caches (pipelined.MAX_SQL_LENGTH). One row, one snapshot.
    return sa.select(
        pool_config,
        active.c.n.label("active_now"),
        sa.select(status.c.status).scalar_subquery().label("chip_status"),
        *(column.label(_CHIP + column.name) for column in locked.c),
    ).select_from(pool_config.join(active, sa.true()).outerjoin(locked, sa.true()))


#: BEGIN's statement: pool_config, the active count, the chip's status, and the chip's row
#: locked (a banned chip's only once a growth slot is locked: lock order slots, then chips).
_LOCK_FIRST = pipelined.Statement(_lock_first_query())


def lock_first(
    conn: sa.Connection, chip_id: str, slot_margin: int
) -> tuple[str, PoolConfig, Mapping | None]:
    """The chip's status, pool_config and the chip's row locked: one statement, with BEGIN.

    An active (or any not banned) chip's row is locked FOR UPDATE (waiting for another
    transaction's lock as usual). A banned chip's row is locked only after a free growth slot
    (FOR UPDATE SKIP LOCKED: never waits), and a slot is tried only while the active count is
    at most producao_max - slot_margin (services/growth.py says why). The chip is None, with
    nothing locked, when a banned chip took no slot (the caller then counts exactly), or when
    the row was deleted while we waited for its lock. Rejected(unknown_chip) when no chip has
    that id. The config and count are read before any wait for the chip's row, unlocked. The
    transaction's first statement: its BEGIN goes with it (pipelined.first).
    """
    row = pipelined.first(conn, _LOCK_FIRST, {"chip_id": chip_id, "slot_margin": slot_margin})
    config = config_from_row(row)
    if row["chip_status"] is None:
        raise Rejected(f"unknown chip {chip_id}", code="unknown_chip")
    chip = None
    if row[_CHIP + "id"] is not None:
        chip = {name: row[_CHIP + name] for name in _CHIP_COLUMNS}
    return row["chip_status"], config, chip


def _best_ready_query() -> sa.Select:
    best = (
        sa.select(chips)
        .where(
            *fit_ready_clauses(None),
            chips.c.id != sa.all_(sa.bindparam("exclude", type_=postgresql.ARRAY(UUID_TEXT))),
        )
        .order_by(chips.c.trust_score.desc(), chips.c.ready_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .subquery("best")
    )
    active = active_sum().subquery("active")
    return sa.select(active.c[0].label("active_now"), best).select_from(
        active.outerjoin(best, sa.true())
    )


_BEST_READY = pipelined.Statement(_best_ready_query())


def best_ready_and_count(
    conn: sa.Connection, config: PoolConfig, exclude: Sequence[str]
) -> tuple[Mapping | None, int]:
    """Lock the best fit ready chip nobody else holds (FOR UPDATE SKIP LOCKED), and the active count.

    The chip as candidates.best_ready picks it (fit_ready_clauses). SKIP LOCKED never waits, so
    the count's snapshot is taken after every lock the caller holds (its growth slot or
    pool_config, and the chip's row): what growth.has_room needs. A count read by a statement
    that waited for a row would be as old as the wait.
    """
    params = {"trust_min": config.trust_min_for_ready, "exclude": list(exclude)}
    row = pipelined.one(conn, _BEST_READY, params)
    candidate = None if row["id"] is None else row
    return candidate, int(row["active_now"])


#: In the message texto given to swap_and_record, replaced by how many conversations moved.
MOVED = "{conversas_migradas}"
#: What swap_and_record writes to orchestrator_operations, as bind parameters.
_OPERATION_COLUMNS = ("operacao", "chip_id", "chip_destino_id", "motivo", "metadata", "sucesso")


def _swap_and_record_query() -> sa.Select:
    new_id, old_id = sa.bindparam("new_id", type_=chips.c.id.type), sa.bindparam("old_id")
    is_new, now = chips.c.id == new_id, sa.func.now()
    both_match = sa.or_(
        sa.and_(chips.c.id == new_id, chips.c.status == "ready"),
        sa.and_(chips.c.id == old_id, chips.c.status == sa.bindparam("old_status")),
    )
    swapped = (
        sa.update(chips)
        .where(both_match)
        .values(
            status=sa.case((is_new, "active"), else_=sa.bindparam("final", type_=sa.Text)),
            promoted_to_active_at=sa.case((is_new, now), else_=chips.c.promoted_to_active_at),
            degraded_at=sa.case((is_new, chips.c.degraded_at), else_=now),
            updated_at=now,
        )
        .returning(chips.c.id)
        .cte("swapped")
    )
    cc = conversation_chips
    moved = (
        sa.update(cc)
        .where(cc.c.chip_id == old_id, cc.c.active)
        .values(chip_id=new_id, migrated_at=now, migrated_from=old_id)
        .returning(cc.c.conversation_id)
        .cte("moved")
    )
    n_moved = sa.select(sa.func.count()).select_from(moved).scalar_subquery()
    values = {
        name: sa.bindparam(name, type_=operations.c[name].type) for name in _OPERATION_COLUMNS
    }
    values["metadata"] = values["metadata"].op("||")(
        sa.func.jsonb_build_object("conversas_migradas", n_moved)
    )
    op = (
        sa.insert(operations)
        .from_select(list(values), sa.select(*values.values()))
        .returning(operations.c.id)
        .cte("op")
    )
    texto = sa.func.replace(sa.bindparam("texto", type_=sa.Text), MOVED, sa.cast(n_moved, sa.Text))
    msg = (
        sa.insert(outbox)
        .from_select(["canal", "texto"], sa.select(sa.bindparam("canal", type_=sa.Text), texto))
        .returning(outbox.c.id)
        .cte("msg")
    )
    forgot = (
        sa.delete(alert_state)
        .where(alert_state.c.key == sa.bindparam("alert_key"))
        .returning(alert_state.c.key)
        .cte("forgot")
    )
    n_swapped = sa.select(sa.func.count()).select_from(swapped).scalar_subquery()
    return sa.select(
        # Unless both compare-and-sets matched, a division by zero aborts the transaction, so
        # the COMMIT sent with this statement commits nothing (SQL has no RAISE of its own).
        (sa.literal(1) / sa.case((n_swapped == 2, 1), else_=0)).label("both_swapped"),
        n_moved.label("moved"),
        sa.select(sa.cast(op.c.id, sa.Text)).scalar_subquery().label("operation_id"),
        sa.select(sa.func.count()).select_from(msg).scalar_subquery().label("messages"),
        sa.select(sa.func.count()).select_from(forgot).scalar_subquery().label("forgotten"),
    )


_SWAP_AND_RECORD = pipelined.Statement(_swap_and_record_query())


def swap_and_record(
    conn: sa.Connection,
    old: Mapping,
    new_id: str,
    final: str,
    operation: Mapping,
    message: tuple[str, str],
    forget_alert: str,
) -> tuple[int, str]:
    """The whole swap's writes and the COMMIT, in one round trip; (conversations moved, op id).

    ready -> active for new_id, old -> final (a compare-and-set on both rows, which the caller
    has locked), old's open conversations to new_id, the operation row (operation: the
    orchestrator_operations columns; its metadata gets `conversas_migradas`), the message
    (canal, texto: MOVED in texto becomes the number moved) and the alert key forgotten. Times
    are now() (the transaction's start). Either all of it is written and committed, or, when
    either compare-and-set finds its chip changed, nothing is (the transaction is rolled back)
    and Rejected(conflict) is raised.
    """
    canal, texto = message
    params = {name: operation[name] for name in _OPERATION_COLUMNS}
    params.update(
        metadata=Jsonb(operation["metadata"]),
        new_id=new_id,
        old_id=old["id"],
        old_status=old["status"],
        final=final,
        canal=canal,
        texto=texto,
        alert_key=forget_alert,
    )
    try:
        row = pipelined.last_and_commit(conn, _SWAP_AND_RECORD, params)
    except sa.exc.DataError as error:
        if not isinstance(error.orig, DivisionByZero):
            raise
        raise Rejected(
            f"chip {old['id']} or {new_id} changed status under us", code="conflict"
        ) from None
    return int(row["moved"]), row["operation_id"]
