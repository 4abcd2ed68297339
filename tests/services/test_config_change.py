"""services/config.change: one transaction on the locked row, whatever runs beside it."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from orchestrator.errors import Rejected
from orchestrator.services import config
from orchestrator.store import db
from orchestrator.store.schema import operations, outbox, pool_config
from tests.support.pg_waits import wait_until, waiting_backends

pytestmark = pytest.mark.db


def setting(engine: sa.Engine, name: str) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.select(pool_config.c[name])).scalar_one()


def recorded(engine: sa.Engine) -> tuple[list[dict], int]:
    """The config_change operations' metadata and how many messages wait in the outbox."""
    with engine.connect() as conn:
        metadata = conn.execute(
            sa.select(operations.c.metadata).where(operations.c.operacao == "config_change")
        ).scalars()
        return list(metadata), conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar()


def test_a_change_waits_for_one_in_progress_and_records_the_value_it_replaced(
    clean_db: sa.Engine, database_url: str
) -> None:
    # Given another session setting producao_max 20 -> 25, its transaction still open
    patient = db.create_engine(database_url, lock_timeout_ms=120_000)  # the wait is forced
    holder = clean_db.connect()
    holder.begin()
    holder.execute(sa.text("UPDATE pool_config SET producao_max = 25"))
    done: dict[str, object] = {}

    def ops() -> None:
        try:
            done["change"] = config.change(patient, ["producao_max=30"])
        except Exception as error:  # surfaced by the assertions below
            done["error"] = error

    thread = threading.Thread(target=ops)
    try:
        # When ops set producao_max=30 meanwhile: the change queues on the row lock ...
        thread.start()
        wait_until(lambda: waiting_backends(clean_db) == 1, timeout=60)
        holder.commit()
    finally:
        holder.close()
    thread.join(60)
    patient.dispose()
    # Then it applies on top of the committed value, and "before" is 25 (read under the lock),
    # never the 20 a read before the lock would have seen
    assert "error" not in done, done
    assert done["change"].antes == {"producao_max": 25}
    assert setting(clean_db, "producao_max") == 30
    assert recorded(clean_db) == (
        [{"antes": {"producao_max": 25}, "depois": {"producao_max": 30}}],
        1,
    )


def test_a_change_the_cycle_rule_refuses_is_rolled_back_with_its_record(
    clean_db: sa.Engine,
) -> None:
    # Given a database whose CHECK on producao_min <= producao_max was dropped (an adopted one
    # before its constraints were validated, say)
    with clean_db.begin() as conn:
        conn.execute(
            sa.text("ALTER TABLE pool_config DROP CONSTRAINT pool_config_producao_min_le_max")
        )
    try:
        # When ops set producao_min above producao_max
        with pytest.raises(Rejected) as refused:
            config.change(clean_db, ["producao_min=50"])
    finally:
        with clean_db.begin() as conn:
            conn.execute(
                sa.text(
                    "ALTER TABLE pool_config ADD CONSTRAINT pool_config_producao_min_le_max"
                    " CHECK (producao_min <= producao_max)"
                )
            )
    # Then the rule the cycle plans by refuses it, and nothing was written
    assert refused.value.reason == (
        "config set refused, nothing changed: pool_config: producao_min exceeds producao_max"
    )
    assert setting(clean_db, "producao_min") == 10
    assert recorded(clean_db) == ([], 0)
