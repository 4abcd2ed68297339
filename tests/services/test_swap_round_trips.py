"""A swap's round trips to PostgreSQL, counted exactly: what each statement reads and writes.

Every statement is a round trip (plus BEGIN and COMMIT); a ping is one more. The promises the
statements keep are the other tests' (test_forced_races.py, test_lifecycle*.py); these pin how
few statements keep them, so a change that adds one shows up here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from orchestrator.services import replacement
from orchestrator.store import db
from orchestrator.store.schema import operations, outbox
from tests.factories import add_conversations, chip_row, conversations_on, make_chip, set_config

pytestmark = pytest.mark.db


class Statements:
    """The statements an engine sends, and the pings its pool makes."""

    def __init__(self, engine: sa.Engine) -> None:
        self.sent: list[str] = []
        self.pings = 0
        self._engine = engine
        self._ping = engine.dialect.do_ping

    def __enter__(self) -> Statements:
        sa.event.listen(self._engine, "before_cursor_execute", self._count)

        def ping(dbapi_connection: object) -> bool:
            self.pings += 1
            return self._ping(dbapi_connection)

        self._engine.dialect.do_ping = ping  # type: ignore[method-assign]
        return self

    def __exit__(self, *_: object) -> None:
        sa.event.remove(self._engine, "before_cursor_execute", self._count)
        self._engine.dialect.do_ping = self._ping  # type: ignore[method-assign]

    def _count(self, _conn, _cursor, statement: str, *_: object) -> None:
        self.sent.append(statement.split(None, 1)[0].upper())


@pytest.fixture
def engine(clean_db: sa.Engine, database_url: str) -> Iterator[sa.Engine]:
    """The workers' engine (db.create_engine), its connection opened and used once already.

    Pings after an idle hour only: how long the machine takes between two statements of this
    test never matters (tests/store/test_engine_ping.py tests the ping).
    """
    eng = db.create_engine(database_url, ping_after_idle_seconds=3600)
    with eng.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    yield eng
    eng.dispose()


def test_replacing_a_banned_chip_takes_six_statements(engine: sa.Engine) -> None:
    # Given a banned chip with 3 open conversations and a ready chip, far below producao_max
    set_config(engine, producao_min=1, producao_max=100)
    old = make_chip(engine, "banned", trust=20)
    add_conversations(engine, old, 3)
    ready = make_chip(engine, "ready", trust=95)
    # When it is replaced
    with Statements(engine) as counted:
        result = replacement.replace_chip(engine, old, "banned")
    # Then: status + config + count, a growth slot, the chip's row, the ready chip + count,
    # both chips and the conversations, the operation + message + alert reset
    assert result["status"] == "replaced"
    assert counted.sent == ["SELECT", "SELECT", "SELECT", "SELECT", "WITH", "WITH"]
    assert counted.pings == 0  # the connection was used a moment ago
    # And every write landed, as before
    assert chip_row(engine, ready).status == "active"
    assert chip_row(engine, old).status == "banned"
    assert chip_row(engine, old).degraded_at is not None
    assert conversations_on(engine, ready) == 3
    with engine.connect() as conn:
        ops = conn.execute(sa.select(operations).where(operations.c.chip_id == old)).all()
        messages = conn.execute(sa.select(outbox.c.canal, outbox.c.texto)).all()
    assert [(op.operacao, op.chip_destino_id, op.metadata["conversas_migradas"]) for op in ops] == [
        ("auto_replace", ready, 3)
    ]
    assert [canal for canal, _ in messages] == ["operacoes"]


def test_replacing_an_active_chip_takes_five_statements(engine: sa.Engine) -> None:
    # Given a low-trust active chip with 2 open conversations and a ready chip
    old = make_chip(engine, "active", trust=20)
    add_conversations(engine, old, 2)
    ready = make_chip(engine, "ready", trust=95)
    # When it is replaced (it adds no active chip: no growth slot)
    with Statements(engine) as counted:
        result = replacement.replace_chip(engine, old)
    # Then five statements did it
    assert result["status"] == "replaced"
    assert counted.sent == ["SELECT", "SELECT", "SELECT", "WITH", "WITH"]
    assert chip_row(engine, old).status == "degraded"
    assert conversations_on(engine, ready) == 2
