"""The orchestrator_operations log: append in the caller's transaction, read the newest, count it.

The counts per (operacao, sucesso) come from operation_tally, kept exact by triggers under any
writer (migrations/versions/0013_operation_tally.py), not from a count over the whole history.

Every function takes the caller's Connection; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from orchestrator.store.schema import (
    chips,
    operation_tally,
    operations,
)

#: metadata.causa of a purchase intent that expired before any run claimed it: nothing was
#: asked of Salvy (the provisioning queue was not consumed), so it is not a failed purchase.
NOT_PICKED_UP = "nao_retirada"


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


def replaced_for(conn: sa.Connection, chip_id: str, reason: str) -> bool:
    """Whether the chip was ever taken out of service (auto_replace) for this reason."""
    stmt = sa.select(
        sa.exists().where(
            operations.c.chip_id == chip_id,
            operations.c.operacao == "auto_replace",
            operations.c.sucesso.is_not(False),
            operations.c.metadata["reason"].astext == reason,
        )
    )
    return bool(conn.execute(stmt).scalar_one())


def swap_by_task(conn: sa.Connection, chip_id: str, task_id: str) -> Mapping | None:
    """The auto_replace this task (its task id in the metadata) did on this chip, if any."""
    stmt = sa.select(operations).where(
        operations.c.chip_id == chip_id,
        operations.c.operacao == "auto_replace",
        operations.c.metadata["task_id"].astext == task_id,
    )
    return conn.execute(stmt).mappings().first()


def operation_counts(conn: sa.Connection) -> dict[tuple[str, bool], int]:
    """Rows of orchestrator_operations per (operacao, sucesso is not false), exact at the
    statement's snapshot, summed from the tally's few rows (never the history itself)."""
    tally = operation_tally
    stmt = sa.select(tally.c.operacao, tally.c.sucesso, sa.func.sum(tally.c.n)).group_by(
        tally.c.operacao, tally.c.sucesso
    )
    return {(operacao, sucesso): int(n) for operacao, sucesso, n in conn.execute(stmt) if n}


def compact_operation_tally(conn: sa.Connection) -> int:
    """Fold the operation tally's deltas into one row per pair (sums unchanged); rows folded."""
    return int(conn.execute(sa.select(sa.func.operation_tally_compact())).scalar_one())
