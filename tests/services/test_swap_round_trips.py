"""A swap's round trips to PostgreSQL, counted on the wire: what each one reads and writes.

A TCP proxy between the workers' engine and PostgreSQL counts each time the client speaks
after the server answered (tests/support/round_trips.py): a statement alone, BEGIN or COMMIT
on their own, or statements sent together in one pipeline flush. The promises the statements
keep are the other tests' (test_forced_races.py, test_lifecycle*.py); these pin how few round
trips keep them, so a change that adds one shows up here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from orchestrator.dev.round_trips import RoundTripProxy, round_trip_proxy
from orchestrator.services import replacement
from orchestrator.store import db
from orchestrator.store.schema import operations, outbox
from tests.factories import add_conversations, chip_row, conversations_on, make_chip, set_config

pytestmark = pytest.mark.db


@pytest.fixture
def proxied(clean_db: sa.Engine) -> Iterator[tuple[RoundTripProxy, str]]:
    """The proxy in front of the test database's server, and the URL through it."""
    with round_trip_proxy(clean_db.url) as proxied:
        yield proxied


@pytest.fixture
def wire(proxied: tuple[RoundTripProxy, str]) -> RoundTripProxy:
    return proxied[0]


@pytest.fixture
def engine(proxied: tuple[RoundTripProxy, str]) -> Iterator[sa.Engine]:
    """The workers' engine (db.create_engine) through the proxy, its connection used once.

    Pings after an idle hour only: how long the machine takes between two statements of this
    test never matters (tests/store/test_engine_ping.py tests the ping).
    """
    eng = db.create_engine(proxied[1], ping_after_idle_seconds=3600)
    with eng.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    yield eng
    eng.dispose()


def test_replacing_a_banned_chip_takes_three_round_trips(
    engine: sa.Engine, wire: RoundTripProxy
) -> None:
    # Given a banned chip with 3 open conversations and a ready chip, far below producao_max
    set_config(engine, producao_min=1, producao_max=100)
    old = make_chip(engine, "banned", trust=20)
    add_conversations(engine, old, 3)
    ready = make_chip(engine, "ready", trust=95)
    # When it is replaced
    wire.reset()
    result = replacement.replace_chip(engine, old, "banned")
    # Then: BEGIN + status, config, count, a growth slot and the chip's row; the ready chip +
    # count; both chips, the conversations, the operation, message, alert reset + COMMIT
    assert result["status"] == "replaced"
    assert wire.reset() == 3
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
    assert messages[0].texto.endswith("Conversas migradas: 3")
    assert result["operation_id"] == str(ops[0].id)


def test_replacing_an_active_chip_takes_three_round_trips(
    engine: sa.Engine, wire: RoundTripProxy
) -> None:
    # Given a low-trust active chip with 2 open conversations and a ready chip
    old = make_chip(engine, "active", trust=20)
    add_conversations(engine, old, 2)
    ready = make_chip(engine, "ready", trust=95)
    # When it is replaced (it adds no active chip: no growth slot)
    wire.reset()
    result = replacement.replace_chip(engine, old)
    # Then three round trips did it: BEGIN with the config and the chip's row locked, the ready
    # chip, the writes with COMMIT
    assert result["status"] == "replaced"
    assert wire.reset() == 3
    assert chip_row(engine, old).status == "degraded"
    assert conversations_on(engine, ready) == 2
