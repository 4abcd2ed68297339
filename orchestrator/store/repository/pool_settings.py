"""The pool_config row as ops read and change it: every setting column, locked to change it.

Every function takes the caller's Connection; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from orchestrator.domain.config_edit import NAMES
from orchestrator.errors import ConfigError
from orchestrator.store.schema import pool_config

#: The setting columns, in the table's order (no id, no updated_at).
SETTINGS = tuple(pool_config.c[name] for name in NAMES)


def settings_row(conn: sa.Connection, *, lock: bool = False) -> Mapping:
    """Every setting of the pool_config row (FOR UPDATE when lock), as stored; ConfigError if
    there is no row."""
    stmt = sa.select(*SETTINGS, pool_config.c.updated_at)
    if lock:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    if row is None:
        raise ConfigError("pool_config has no row; run `chip-orchestrator migrate`")
    return row


def update_settings(conn: sa.Connection, values: Mapping[str, object]) -> Mapping:
    """Write these settings (the CHECK constraints judge them); the row as stored after."""
    stmt = (
        sa.update(pool_config)
        .values(**values, updated_at=sa.func.now())
        .returning(*SETTINGS, pool_config.c.updated_at)
    )
    return conn.execute(stmt).mappings().one()
