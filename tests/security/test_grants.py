"""The database role a worker needs: DML on our tables, no DDL (the SQL of docs/reliability.md)."""

from __future__ import annotations

import uuid

import pytest
import redis
import sqlalchemy as sa

from orchestrator.ops import metrics_read
from orchestrator.services import (
    chip_list,
    config,
    cycle,
    cycle_purchases,
    delivery,
    dispatch,
    promote,
    replacement,
)
from orchestrator.services.intent import ensure_intent, fail
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction
from tests.factories import add_conversations, make_chip

pytestmark = pytest.mark.db

#: Exactly what docs/reliability.md tells ops to run ({role} is the worker's login role).
GRANTS = """
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT, UPDATE ON pool_config TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON chips TO {role};
GRANT SELECT, UPDATE ON conversation_chips TO {role};
GRANT SELECT, INSERT ON orchestrator_operations TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON notification_outbox TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON alert_state TO {role};
GRANT SELECT, INSERT, UPDATE ON purchase_backoff TO {role};
GRANT SELECT ON chip_status_tally TO {role};
GRANT SELECT ON chip_status_tally_checks TO {role};
GRANT SELECT ON operation_tally TO {role};
GRANT SELECT, UPDATE ON pool_growth_slots TO {role};
GRANT SELECT, INSERT, DELETE ON stranded_chip_events TO {role};
GRANT SELECT, INSERT, UPDATE ON backstop_cursor TO {role};
GRANT SELECT, DELETE ON chip_disconnect_events TO {role};
GRANT SELECT, INSERT, UPDATE ON chip_webhook_state TO {role};
"""


@pytest.fixture
def worker_role(clean_db: sa.Engine) -> sa.Engine:
    """An engine whose every connection runs as a role holding only GRANTS."""
    role = f"chiporch_worker_{uuid.uuid4().hex[:8]}"
    with clean_db.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} NOLOGIN"))
        conn.execute(sa.text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        for statement in GRANTS.format(role=role).strip().splitlines():
            conn.execute(sa.text(statement))
    engine = sa.create_engine(clean_db.url)

    @sa.event.listens_for(engine, "connect")
    def _as_role(dbapi_conn, _record) -> None:
        # Outside a transaction: a SET inside one would be undone by the first rollback.
        dbapi_conn.autocommit = True
        with dbapi_conn.cursor() as cursor:
            cursor.execute(f"SET ROLE {role}")
        dbapi_conn.autocommit = False

    yield engine
    engine.dispose()
    with clean_db.begin() as conn:
        conn.execute(sa.text(f"DROP OWNED BY {role}"))
        conn.execute(sa.text(f"DROP ROLE {role}"))


class _Log:
    via = "log"

    def send(self, canal: str, texto: str) -> None:
        pass


def test_the_documented_grants_are_enough_for_every_use_case(
    clean_db: sa.Engine, worker_role: sa.Engine
) -> None:
    # Given chips to replace, promote and a purchase intent, worked only through the worker role
    old = make_chip(clean_db, "active", trust=30)
    add_conversations(clean_db, old, 2)
    make_chip(clean_db, "ready", trust=95)
    banned = make_chip(clean_db, "banned")
    add_conversations(clean_db, banned, 1)
    # When every kind of write runs as that role
    assert replacement.replace_chip(worker_role, old, "low_trust")["status"] == "replaced"
    assert replacement.replace_chip(worker_role, banned)["status"] in ("replaced", "no_ready_chip")
    ready = make_chip(clean_db, "ready", trust=90)
    assert promote.promote_ready_to_active(worker_role, ready)["status"] == "promoted"
    intent = ensure_intent(worker_role, "chiporch-grants", 11, 15)
    fail(worker_role, intent, "teste")
    assert cycle_purchases.record_intents(worker_role, 1, 15) == []  # paused by that failure
    assert cycle_purchases.drop_unsent(worker_role, ["never-sent"]) == 0
    assert cycle.pool_status(worker_role)["compras"]["estado"] == "pausadas"
    with transaction(worker_role) as conn:
        outbox.alert_once(conn, "grants", "alerta", cooldown=None)
        outbox.forget_alert(conn, "grants")
    with transaction(worker_role) as conn:  # the backstop's rotation (the cycle's tidy)
        assert repo.advance_backstop(conn, repo.backstop_position(conn))
    delivered = delivery.deliver_pending(worker_role, _Log())
    delivery.prune_delivered(worker_role)
    with transaction(worker_role) as conn:
        folded = repo.compact_operation_tally(conn)
    reading = metrics_read.read_database(worker_role)
    # Then all of it succeeded, the metrics included
    assert delivered["pending"] == 0
    assert folded > 0 and reading.operations[("auto_replace", "true")] >= 1


def test_the_documented_grants_are_enough_for_a_whole_cycle(
    clean_db: sa.Engine, worker_role: sa.Engine, redis_client: redis.Redis
) -> None:
    # Given a pool with something for every step of the cycle: a drifted count, a chip to
    # return to service, a flapping drop, a stranded conversation, numbers to buy
    degraded = make_chip(clean_db, "degraded", trust=95)
    with clean_db.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            sa.text("UPDATE chips SET degraded_at = now() - interval '2 hours' WHERE id = :id"),
            {"id": degraded},
        )
    make_chip(clean_db, "active")
    flapping = make_chip(clean_db, "active")
    with clean_db.begin() as conn:
        conn.execute(
            sa.text("UPDATE chips SET evolution_connected = false WHERE id = :id"), {"id": flapping}
        )
    add_conversations(clean_db, make_chip(clean_db, "degraded", trust=10), 1)
    sent: list[str] = []
    # When a cycle runs as the worker role
    result = dispatch.run_cycle(
        worker_role, redis_client, lambda name, args, _id: sent.append(name), period_seconds=60
    )
    # Then every step ran (none deferred for want of a privilege)
    assert result["status"] == "planned" and result["deferred"] == [], result
    assert "orchestrator.provision_chip" in sent


def test_the_worker_role_cannot_change_the_schema(worker_role: sa.Engine) -> None:
    # When the worker role tries DDL
    denied = r"permission denied|must be owner"
    with pytest.raises(sa.exc.ProgrammingError, match=denied), worker_role.begin() as conn:
        conn.execute(sa.text("ALTER TABLE chips ADD COLUMN x int"))
    with pytest.raises(sa.exc.ProgrammingError, match=denied), worker_role.begin() as conn:
        conn.execute(sa.text("CREATE TABLE intruder (id int)"))
    with pytest.raises(sa.exc.ProgrammingError, match=denied), worker_role.begin() as conn:
        conn.execute(sa.text("DELETE FROM orchestrator_operations"))


def test_the_chips_and_config_verbs_need_no_more_than_the_workers_grants(
    clean_db: sa.Engine, worker_role: sa.Engine
) -> None:
    # Given a chip with conversations, read and changed only through the worker role
    chip = make_chip(clean_db, "active")
    add_conversations(clean_db, chip, 2)
    # When ops list the chips, read the config and change it as that role
    page = chip_list.list_chips(worker_role)
    settings, _ = config.current(worker_role)
    done = config.change(worker_role, ["ready_min=4"])
    # Then all of it succeeded
    assert [(c["id"], c["open_conversations"]) for c in page.chips] == [(chip, 2)]
    assert settings["ready_min"] == 3
    assert done.depois == {"ready_min": 4} and done.operation_id is not None
