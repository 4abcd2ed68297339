"""The SQL: aggregate reads, candidate queries, compare-and-set transitions, the operations log.

Every function takes the caller's Connection; the caller owns the transaction (lifecycle.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa

from orchestrator.domain.pool import ChipView, Counts, PoolConfig
from orchestrator.errors import ConfigError, Rejected
from orchestrator.store.schema import (
    chip_status_tally,
    chips,
    conversation_chips,
    operations,
    pool_config,
    pool_growth_slots,
    stranded_chip_events,
)

#: Columns a ChipView needs.
VIEW_COLUMNS = (
    chips.c.id,
    chips.c.status,
    chips.c.trust_score,
    chips.c.evolution_connected,
    chips.c.evolution_disconnected_at,
    chips.c.fase_warmup,
    chips.c.warming_started_at,
    chips.c.degraded_at,
)


def parse_chip_id(value: object) -> str:
    """A canonical UUID string, or Rejected for anything else."""
    if not isinstance(value, str):
        raise Rejected(
            f"chip id must be a UUID string, got {type(value).__name__}", code="malformed"
        )
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Rejected(f"malformed chip id {value[:64]!r}", code="malformed") from None


def load_config(conn: sa.Connection, *, lock: bool = False) -> PoolConfig:
    """The pool_config row (FOR UPDATE when lock: serialises changes to the active count)."""
    stmt = sa.select(pool_config)
    if lock:
        stmt = stmt.with_for_update()
    return _config(conn.execute(stmt).mappings().first())


def load_config_and_active(conn: sa.Connection) -> tuple[PoolConfig, int]:
    """The pool_config row (not locked) and how many chips are active, in one statement."""
    stmt = sa.select(pool_config, _active_sum().scalar_subquery().label("active_now"))
    row = conn.execute(stmt).mappings().first()
    return _config(row), int(row["active_now"])


def _config(row: Mapping | None) -> PoolConfig:
    if row is None:
        raise ConfigError("pool_config has no row; run `chip-orchestrator migrate`")
    config = PoolConfig.from_mapping(row)
    if problems := config.problems():
        raise ConfigError("pool_config invalid: " + "; ".join(problems))
    return config


# -- chip counts: chip_status_tally, kept exact by triggers (migrations/versions/0005_scale.py) --


def status_counts(conn: sa.Connection) -> Counts:
    """Chips per status, exact at the statement's snapshot, summed from a few tally rows."""
    tally = chip_status_tally
    rows = conn.execute(sa.select(tally.c.status, sa.func.sum(tally.c.n)).group_by(tally.c.status))
    return Counts.from_pairs({status: int(n) for status, n in rows})


def _active_sum() -> sa.Select:
    tally = chip_status_tally
    return sa.select(sa.func.coalesce(sa.func.sum(tally.c.n), 0)).where(tally.c.status == "active")


def count_active(conn: sa.Connection) -> int:
    """How many chips are active right now (exact; cost independent of the pool's size)."""
    return int(conn.execute(_active_sum()).scalar_one())


def active_trust_mean(conn: sa.Connection) -> float:
    """Mean trust of the active chips (reads each one: for status and metrics, not the cycle)."""
    stmt = sa.select(sa.func.avg(chips.c.trust_score)).where(chips.c.status == "active")
    mean = conn.execute(stmt).scalar_one()
    return float(mean) if mean is not None else 0.0


def take_growth_slot(conn: sa.Connection) -> bool:
    """Lock one free growth slot (SKIP LOCKED: never waits); False when every slot is held."""
    stmt = (
        sa.select(pool_growth_slots.c.slot)
        .order_by(pool_growth_slots.c.slot)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return conn.execute(stmt).first() is not None


def lock_growth_slots(conn: sa.Connection) -> None:
    """Lock every growth slot: waits for the swaps holding one, keeps new ones out until commit."""
    conn.execute(
        sa.select(pool_growth_slots.c.slot).order_by(pool_growth_slots.c.slot).with_for_update()
    ).all()


def count_by_status(conn: sa.Connection) -> tuple[Counts, float]:
    """Chips per status and the average trust of active chips."""
    return status_counts(conn), active_trust_mean(conn)


def compact_status_tally(conn: sa.Connection) -> int:
    """Fold the tally's deltas into one row per status (sums unchanged); rows folded."""
    return int(conn.execute(sa.select(sa.func.chip_status_tally_compact())).scalar_one())


def serving_candidates(conn: sa.Connection, config: PoolConfig) -> list[ChipView]:
    """Active chips with low trust or disconnected, and banned chips not yet handled."""
    active = sa.and_(
        chips.c.status == "active",
        sa.or_(
            chips.c.trust_score < config.trust_degraded_threshold,
            sa.not_(chips.c.evolution_connected),
        ),
    )
    banned = sa.and_(chips.c.status == "banned", chips.c.degraded_at.is_(None))
    rows = conn.execute(sa.select(*VIEW_COLUMNS).where(sa.or_(active, banned))).mappings()
    return [ChipView(**row) for row in rows]


def warming_candidates(conn: sa.Connection, config: PoolConfig) -> list[ChipView]:
    """Warming chips in phase 'operacao' with enough trust, warmed >= warmup_days (pool.py rechecks).

    The days are whole 24-hour days before the transaction's now(), as pool.warmed_days counts
    them (hours, not calendar days, so a DST change in the session's time zone cannot shift it).
    """
    warmed_before = sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 24 * config.warmup_days)
    stmt = sa.select(*VIEW_COLUMNS).where(
        chips.c.status == "warming",
        chips.c.fase_warmup == "operacao",
        chips.c.trust_score >= config.trust_min_for_ready,
        chips.c.warming_started_at <= warmed_before,
    )
    return [ChipView(**row) for row in conn.execute(stmt).mappings()]


def ready_ranked(conn: sa.Connection, config: PoolConfig, limit: int) -> list[ChipView]:
    """Ready chips fit to serve, best first (highest trust, then longest ready): replace's order."""
    stmt = (
        sa.select(*VIEW_COLUMNS)
        .where(*fit_ready_clauses(config))
        .order_by(chips.c.trust_score.desc(), chips.c.ready_at)
        .limit(limit)
    )
    return [ChipView(**row) for row in conn.execute(stmt).mappings()]


def cancellable_banned(conn: sa.Connection, limit: int = 100) -> list[str]:
    """Banned chips already replaced, still holding a number."""
    stmt = (
        sa.select(chips.c.id)
        .where(chips.c.status == "banned", chips.c.degraded_at.is_not(None))
        .limit(limit)
    )
    return list(conn.execute(stmt).scalars())


def get_chip(conn: sa.Connection, chip_id: str, *, lock: bool = False) -> Mapping:
    """One chip row (FOR UPDATE when lock), or Rejected if unknown."""
    stmt = sa.select(chips).where(chips.c.id == chip_id)
    if lock:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    if row is None:
        raise Rejected(f"unknown chip {chip_id}", code="unknown_chip")
    return row


def find_chip_id(conn: sa.Connection, ref: str) -> str:
    """Resolve a chip id or a phone number (digits, with or without +55) to a chip id."""
    try:
        return parse_chip_id(ref)
    except Rejected:
        pass
    digits = "".join(ch for ch in ref if ch.isdigit())
    if len(digits) < 10:
        raise Rejected(f"{ref[:64]!r} is neither a chip id nor a phone number", code="malformed")
    candidates = {digits, "55" + digits}
    stmt = sa.select(chips.c.id).where(
        sa.func.regexp_replace(chips.c.telefone, r"\D", "", "g").in_(candidates)
    )
    found = list(conn.execute(stmt).scalars())
    if len(found) != 1:
        raise Rejected(f"no single chip with phone number {ref[:32]}", code="unknown_chip")
    return found[0]


def best_ready(conn: sa.Connection, config: PoolConfig, exclude: Sequence[str]) -> Mapping | None:
    """Lock the best ready chip fit to serve that nobody else holds (FOR UPDATE SKIP LOCKED)."""
    stmt = (
        sa.select(chips)
        .where(*fit_ready_clauses(config), chips.c.id.not_in(exclude))
        .order_by(chips.c.trust_score.desc(), chips.c.ready_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return conn.execute(stmt).mappings().first()


def least_loaded_healthy_active(
    conn: sa.Connection, config: PoolConfig, exclude: str
) -> Mapping | None:
    """Lock the connected, trusted active chip with the fewest active conversations."""
    load = (
        sa.select(sa.func.count())
        .where(conversation_chips.c.chip_id == chips.c.id, conversation_chips.c.active)
        .scalar_subquery()
    )
    stmt = (
        sa.select(chips)
        .where(
            chips.c.status == "active",
            chips.c.evolution_connected,
            chips.c.trust_score >= config.trust_degraded_threshold,
            chips.c.id != exclude,
        )
        .order_by(load, chips.c.trust_score.desc())
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return conn.execute(stmt).mappings().first()


def transition(
    conn: sa.Connection, chip_id: str, expected: Sequence[str], **values: object
) -> Mapping | None:
    """Compare-and-set: UPDATE chips .. WHERE id = :id AND status IN :expected RETURNING *."""
    stmt = (
        sa.update(chips)
        .where(chips.c.id == chip_id, chips.c.status.in_(expected))
        .values(**values, updated_at=sa.func.now())
        .returning(chips)
    )
    return conn.execute(stmt).mappings().first()


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


def record_operation(
    conn: sa.Connection,
    operacao: str,
    chip_id: str | None,
    motivo: str,
    *,
    destino: str | None = None,
    metadata: Mapping | None = None,
    sucesso: bool = True,
    erro: str | None = None,
) -> str:
    """Append to orchestrator_operations in the caller's transaction."""
    stmt = (
        sa.insert(operations)
        .values(
            operacao=operacao,
            chip_id=chip_id,
            chip_destino_id=destino,
            motivo=motivo,
            metadata=dict(metadata or {}),
            sucesso=sucesso,
            erro=erro,
        )
        .returning(operations.c.id)
    )
    return conn.execute(stmt).scalar_one()


def recent_operations(conn: sa.Connection, limit: int = 10) -> list[Mapping]:
    """The newest operations, with the phone numbers of their chips."""
    source, target = chips.alias("o"), chips.alias("d")
    stmt = (
        sa.select(
            operations.c.created_at,
            operations.c.operacao,
            operations.c.motivo,
            operations.c.sucesso,
            source.c.telefone.label("telefone"),
            target.c.telefone.label("telefone_destino"),
        )
        .select_from(
            operations.outerjoin(source, source.c.id == operations.c.chip_id).outerjoin(
                target, target.c.id == operations.c.chip_destino_id
            )
        )
        .order_by(operations.c.created_at.desc())
        .limit(limit)
    )
    return list(conn.execute(stmt).mappings())


def db_now(conn: sa.Connection) -> datetime:
    """The database's clock (transaction start): one clock for every comparison."""
    return conn.execute(sa.select(sa.func.now())).scalar_one()


# -- stranded conversations (open rows left on chips that no longer serve) ----------------------
#
# Triggers note every chip that leaves `active` and every chip gaining an open row while not
# active (stranded_chip_events, migrations/versions/0005_scale.py): the cycle checks those chips
# only, and one slice of the chip-id space as a backstop (what the triggers could not see).


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


def lock_if_serving(conn: sa.Connection, config: PoolConfig, chip_id: str) -> Mapping | None:
    """Share-lock chip_id if it is active, connected and trusted; None otherwise.

    FOR SHARE keeps a replacement of that chip from committing until we do; a chip replaced
    while we waited is re-checked on its new row version and comes back None.
    """
    stmt = (
        sa.select(chips)
        .where(
            chips.c.id == chip_id,
            chips.c.status == "active",
            chips.c.evolution_connected,
            chips.c.trust_score >= config.trust_degraded_threshold,
        )
        .with_for_update(read=True)
    )
    return conn.execute(stmt).mappings().first()


def fit_ready_clauses(config: PoolConfig) -> tuple[sa.ColumnElement[bool], ...]:
    """SQL twin of pool.is_fit_to_serve for ready chips (idx_chips_ready_fit serves it).

    A chip once degraded is never taken again (degraded_at IS NULL), as replace always did.
    """
    return (
        chips.c.status == "ready",
        chips.c.evolution_connected,
        chips.c.degraded_at.is_(None),
        chips.c.trust_score >= config.trust_min_for_ready,
    )


def fit_ready_exists(conn: sa.Connection, config: PoolConfig, exclude: Sequence[str]) -> bool:
    """Whether a fit ready chip exists, locked by others or not (a plain read never waits)."""
    stmt = sa.select(sa.exists().where(*fit_ready_clauses(config), chips.c.id.not_in(exclude)))
    return bool(conn.execute(stmt).scalar_one())


def count_active_disconnected(conn: sa.Connection) -> tuple[int, int]:
    """Active chips, and how many of them are disconnected now (the storm brake's inputs).

    The tally gives the first; the second reads only the disconnected active chips (a partial
    index, idx_chips_active_disconnected).
    """
    disconnected = sa.select(sa.func.count()).where(
        chips.c.status == "active", sa.not_(chips.c.evolution_connected)
    )
    stmt = sa.select(_active_sum().scalar_subquery(), disconnected.scalar_subquery())
    row = conn.execute(stmt).one()
    return int(row[0]), int(row[1])
