"""`config` and `config set`: read pool_config; change it in one transaction, recorded and told.

A change locks the row (FOR UPDATE: the cycle and a second `config set` wait, and the "before"
is the row as it is when the change applies, not as it was read earlier), writes only what
differs, lets the CHECK constraints judge it, re-checks it with the rule the cycle plans by, and
commits with one `config_change` operation (before and after) and its message in #operacoes.
Anything refused rolls all of it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from orchestrator.domain import config_edit, messages
from orchestrator.domain.config import PoolConfig
from orchestrator.errors import Rejected
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction
from orchestrator.store.repository import pool_settings

#: orchestrator_operations.operacao of a change.
OPERACAO = "config_change"


@dataclass(frozen=True)
class ConfigChange:
    """What `config set` did: the changed settings before and after (empty: nothing changed)."""

    antes: dict[str, object] = field(default_factory=dict)
    depois: dict[str, object] = field(default_factory=dict)
    #: Settings given with the value they already had.
    unchanged: dict[str, object] = field(default_factory=dict)
    operation_id: str | None = None


def current(engine: sa.Engine) -> tuple[dict[str, object], str]:
    """Every setting as stored (numeric as float) and when the row last changed (ISO 8601)."""
    with transaction(engine) as conn:
        row = pool_settings.settings_row(conn)
    settings = {name: config_edit.plain(row[name]) for name in config_edit.NAMES}
    return settings, row["updated_at"].isoformat()


def change(engine: sa.Engine, assignments: Sequence[str]) -> ConfigChange:
    """Apply NAME=VALUE settings; Rejected (nothing changed) for a bad name, value or result."""
    wanted = config_edit.parse_assignments(assignments)
    try:
        with transaction(engine) as conn:
            before = pool_settings.settings_row(conn, lock=True)
            changed = config_edit.changes(before, wanted)
            unchanged = {k: config_edit.plain(v) for k, v in wanted.items() if k not in changed}
            if not changed:
                return ConfigChange(unchanged=unchanged)
            after = pool_settings.update_settings(conn, changed)
            if problems := PoolConfig.from_mapping(after).problems():
                raise Rejected("pool_config: " + "; ".join(problems), code="constraint")
            meta = config_edit.before_after(before, after, list(changed))
            operation_id = _record(conn, meta)
    except Rejected as error:
        raise Rejected(
            f"config set refused, nothing changed: {error.reason}", code=error.code
        ) from None
    return ConfigChange(meta["antes"], meta["depois"], unchanged, str(operation_id))


def _record(conn: sa.Connection, meta: dict[str, dict[str, object]]) -> str:
    """The change's operation and its #operacoes message, in the change's transaction."""
    motivo = "Configuracao alterada: " + ", ".join(meta["depois"])
    operation_id = repo.record_operation(conn, OPERACAO, None, motivo, metadata=meta)
    outbox.enqueue(conn, "operacoes", messages.config_changed(meta["antes"], meta["depois"]))
    return operation_id
