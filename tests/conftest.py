"""Real servers for the tests: a fresh PostgreSQL database and a free Redis DB number per run.

With DATABASE_URL / REDIS_URL set (CI) they point at the machine's servers; unset, `make test`
sets ORCHESTRATOR_EMBEDDED=1 and the embedded ones under .data/ are used, as `make run` does.
The embedded servers this run started are stopped when it ends (tests/support/servers.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from orchestrator.dev.scratch import scratch_database
from orchestrator.store import db
from tests.support import servers

#: Fixtures of the local Slack and Salvy stand-ins (slack, sender, standin, salvy), for every group;
#: tests/worker (and what reuses its fixtures) overrides `salvy` with a module-wide stand-in.
pytest_plugins = ["tests.support.standins"]

TABLES = (
    "alert_state, notification_outbox, orchestrator_operations, conversation_chips, chips,"
    " purchase_backoff, stranded_chip_events, chip_status_tally_checks, chip_disconnect_events, chip_webhook_state"
)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remember the embedded servers already running (a demo's): the run leaves them alone."""
    servers.remember_running()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the embedded servers this run started: nothing it started outlives it."""
    servers.stop_started()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of its own for this run, migrated to head, dropped afterwards."""
    with scratch_database(servers.base_database_url(), prefix="chiporch_test") as url:
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = db.create_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def clean_db(engine: sa.Engine) -> sa.Engine:
    """An empty pool with the default pool_config row."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {TABLES} CASCADE"))
        conn.execute(sa.text("DELETE FROM pool_config"))
        conn.execute(sa.text("INSERT INTO pool_config DEFAULT VALUES"))
    return engine


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis DB number nobody else uses during this run (claimed with SET NX)."""
    base = servers.base_redis_url().rsplit("/", 1)[0]
    token = uuid.uuid4().hex
    for number in range(15, 0, -1):
        client = redis.Redis.from_url(f"{base}/{number}")
        if client.dbsize() == 0 and client.set("chiporch:test-claim", token, nx=True, ex=7200):
            url = f"{base}/{number}"
            os.environ.setdefault("CHIPORCH_TEST_REDIS", url)
            yield url
            client.flushdb()
            client.close()
            return
        client.close()
    pytest.fail("no free Redis DB number (1..15) for the tests")


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _wipe_orchestrator_keys(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter("chiporch:*"):
            if key != b"chiporch:test-claim":
                client.delete(key)
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _fresh_redis_keys(request: pytest.FixtureRequest) -> Iterator[None]:
    """Locks, markers and cycle slots of one test never leak into the next (before and after)."""
    if "redis_url" not in request.fixturenames:
        yield
        return
    url = request.getfixturevalue("redis_url")
    _wipe_orchestrator_keys(url)
    yield
    _wipe_orchestrator_keys(url)
