"""`chip-orchestrator metrics` scraped over HTTP, as Prometheus does, on the real database and Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.adapters import cycle_timing
from orchestrator.app import bootstrap
from orchestrator.dev.ports import ClosedPort
from orchestrator.services import backoff, delivery, dispatch
from orchestrator.store import outbox
from orchestrator.store.schema import chips, conversation_chips, operations
from tests.factories import add_conversations, make_chip, set_config
from tests.ops.conftest import Service, ops_env
from tests.support.fake_slack import FakeSlack
from tests.support.outbox_helpers import TOKEN, make_due, queue, settings_for
from tests.support.pg_waits import wait_for

pytestmark = pytest.mark.db

#: Seconds between database reads of the served process (short, so tests see changes fast).
INTERVAL = 0.3

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class MetricsProcess(Service):
    """`python -m orchestrator metrics` on the port it picks when it binds."""

    def __init__(self, env: dict[str, str], log_dir: Path, interval: float) -> None:
        args = ["-m", "orchestrator", "metrics", "--host", "127.0.0.1", "--port", "0"]
        log = log_dir / f"metrics-{uuid.uuid4().hex[:6]}.log"
        super().__init__([*args, "--interval", str(interval)], env, log)
        self.url = f"http://127.0.0.1:{self.bound_port()}/metrics"
        self.wait_http(self.url)

    def scrape(self) -> Samples:
        """Every sample of one scrape, keyed by (sample name, sorted labels)."""
        response = requests.get(self.url, timeout=5)
        response.raise_for_status()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def metrics(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MetricsProcess]:
    proc = MetricsProcess(ops_env(database_url, redis_url), tmp_path_factory.mktemp("m"), INTERVAL)
    yield proc
    proc.stop()


def next_scrape(metrics: MetricsProcess) -> Samples:
    """A scrape taken after the cache of the previous one has expired."""
    time.sleep(INTERVAL * 1.5)
    return metrics.scrape()


def test_chips_per_status_and_pool_health_match_the_database(
    clean_db: sa.Engine, metrics: MetricsProcess
) -> None:
    # Given a pool below producao_min: 2 active, 1 ready, 3 warming, 1 being bought, 1 banned
    set_config(clean_db, producao_min=3, producao_max=5)
    for status, n in {"active": 2, "ready": 1, "warming": 3, "banned": 1}.items():
        for _ in range(n):
            make_chip(clean_db, status)
    make_chip(clean_db, "provisioning", telefone=None, provisioning_name="chiporch-m1")
    # When Prometheus scrapes
    samples = next_scrape(metrics)
    # Then every status is exported with the database's count, and the pool is critico
    with clean_db.connect() as conn:
        db_counts = dict(
            conn.execute(sa.select(chips.c.status, sa.func.count()).group_by(chips.c.status)).all()
        )
    for status in ("provisioning", "warming", "ready", "active", "degraded", "banned", "cancelled"):
        assert value(samples, "chip_orchestrator_chips", status=status) == db_counts.get(status, 0)
    assert value(samples, "chip_orchestrator_pool_health") == 2
    assert value(samples, "chip_orchestrator_pool_health_state", state="critico") == 1
    assert value(samples, "chip_orchestrator_pool_health_state", state="saudavel") == 0
    assert value(samples, "chip_orchestrator_provisioning_in_flight") == 1
    assert value(samples, "chip_orchestrator_up") == 1


def test_operations_are_counted_by_type_and_outcome(
    clean_db: sa.Engine, metrics: MetricsProcess
) -> None:
    # Given two successful replacements and one failed purchase in orchestrator_operations
    chip = make_chip(clean_db, "degraded")
    rows = [
        {"operacao": "auto_replace", "chip_id": chip, "sucesso": True},
        {"operacao": "auto_replace", "chip_id": chip, "sucesso": True},
        {"operacao": "auto_provision", "chip_id": chip, "sucesso": False, "erro": "timeout"},
    ]
    with clean_db.begin() as conn:
        conn.execute(sa.insert(operations), rows)
    # When Prometheus scrapes
    samples = next_scrape(metrics)
    # Then each (operacao, sucesso) pair carries its count, and types never seen are zero
    name = "chip_orchestrator_operations_total"
    assert value(samples, name, operacao="auto_replace", sucesso="true") == 2
    assert value(samples, name, operacao="auto_provision", sucesso="false") == 1
    assert value(samples, name, operacao="auto_provision", sucesso="true") == 0
    assert value(samples, name, operacao="cancel", sucesso="true") == 0


def test_the_outbox_backlog_and_its_oldest_message_age_are_exported(
    clean_db: sa.Engine, metrics: MetricsProcess
) -> None:
    # Given three undelivered Slack messages, the oldest queued two minutes ago, and one delivered
    with clean_db.begin() as conn:
        ids = [outbox.enqueue(conn, "alertas", f"alerta {i}") for i in range(4)]
        conn.execute(
            sa.text("UPDATE notification_outbox SET created_at = now() - :age WHERE id = :id"),
            {"age": timedelta(minutes=2), "id": ids[0]},
        )
        conn.execute(
            sa.text("UPDATE notification_outbox SET delivered_at = now() WHERE id = :id"),
            {"id": ids[3]},
        )
    # When Prometheus scrapes
    samples = next_scrape(metrics)
    # Then
    assert value(samples, "chip_orchestrator_outbox_pending") == 3
    assert 120 <= value(samples, "chip_orchestrator_outbox_oldest_pending_seconds") < 600


def test_slack_refusing_the_token_shows_as_pending_age_and_error_code_until_it_accepts(
    clean_db: sa.Engine, metrics: MetricsProcess
) -> None:
    # Given four alerts Slack refused (token_revoked) on the deliverer's first try
    slack = FakeSlack(token=TOKEN)
    slack.start()
    try:
        sender = bootstrap.build_sender(settings_for(slack.base_url))
        slack.refuse_with = "token_revoked"
        queue(clean_db, *[("alertas", f"alerta {n}") for n in range(4)])
        assert delivery.deliver_pending(clean_db, sender)["status"] == "refused"
        # When Prometheus scrapes
        refused = next_scrape(metrics)
        # And after Slack accepts again and the back-off has passed
        slack.refuse_with = None
        make_due(clean_db)
        assert delivery.deliver_pending(clean_db, sender)["delivered"] == 4
        accepted = next_scrape(metrics)
    finally:
        slack.stop()
    # Then the first scrape showed the backlog, its age and the cause
    assert value(refused, "chip_orchestrator_outbox_pending") == 4
    assert value(refused, "chip_orchestrator_outbox_oldest_pending_seconds") > 0
    error = "chip_orchestrator_outbox_last_error"
    assert value(refused, error, canal="alertas", code="token_revoked") == 1
    assert [k for k in refused if k[0] == error] == [
        (error, (("canal", "alertas"), ("code", "token_revoked")))
    ]
    # And the second an empty backlog, no error, and a delivery just now
    assert value(accepted, "chip_orchestrator_outbox_pending") == 0
    assert [k for k in accepted if k[0] == error] == []
    delivered = value(accepted, "chip_orchestrator_outbox_last_delivered_timestamp_seconds")
    assert time.time() - 60 < delivered <= time.time() + 1


def test_open_conversations_on_chips_that_are_not_active_are_exported_exactly(
    clean_db: sa.Engine, metrics: MetricsProcess
) -> None:
    # Given open conversations on active chips (fine), on a degraded, a cancelled and a freshly
    # banned chip (stranded: 3 + 2 + 1), and closed ones on a degraded chip (not open)
    add_conversations(clean_db, make_chip(clean_db, "active"), 5)
    degraded = make_chip(clean_db, "degraded")
    add_conversations(clean_db, degraded, 3)
    add_conversations(clean_db, make_chip(clean_db, "cancelled"), 2)
    add_conversations(clean_db, make_chip(clean_db, "banned"), 1)
    closed = add_conversations(clean_db, degraded, 4)
    with clean_db.begin() as conn:
        conn.execute(
            sa.update(conversation_chips)
            .where(conversation_chips.c.conversation_id.in_(closed))
            .values(active=False)
        )
    # When Prometheus scrapes
    samples = next_scrape(metrics)
    # Then the gauge carries exactly the open conversations on chips that are not active
    assert value(samples, "chip_orchestrator_stranded_conversations") == 6


def test_a_change_in_the_pool_shows_in_the_scrape_after_one_interval(
    clean_db: sa.Engine, metrics: MetricsProcess
) -> None:
    # Given a scrape of a pool with one ready chip
    make_chip(clean_db, "ready")
    before = next_scrape(metrics)
    # When another ready chip appears and one interval passes
    make_chip(clean_db, "ready")
    after = wait_for(
        lambda: (
            (s := metrics.scrape())
            and value(s, "chip_orchestrator_chips", status="ready") == 2
            and s
        ),
        timeout=5 + INTERVAL * 4,
    )
    # Then the scrape changed from 1 to 2
    assert value(before, "chip_orchestrator_chips", status="ready") == 1
    assert value(after, "chip_orchestrator_chips", status="ready") == 2


def test_scrapes_within_one_interval_reuse_one_database_read(
    clean_db: sa.Engine,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    # Given a metrics process that reads the database at most once an hour, already scraped once
    proc = MetricsProcess(ops_env(database_url, redis_url), tmp_path, interval=3600)
    try:
        first = proc.scrape()
        # When the pool changes and Prometheus scrapes again
        make_chip(clean_db, "warming")
        second = proc.scrape()
    finally:
        proc.stop()
    # Then the second scrape is served from the cache, not a new query
    name = "chip_orchestrator_chips"
    assert value(second, name, status="warming") == value(first, name, status="warming")


def test_the_last_cycle_time_and_duration_come_from_the_cycle_itself(
    clean_db: sa.Engine, redis_url: str, metrics: MetricsProcess
) -> None:
    # Given a cycle that planned and dispatched (its tasks collected instead of sent)
    client = redis.Redis.from_url(redis_url)
    sent: list[str] = []
    result = dispatch.run_cycle(
        clean_db, client, lambda name, args, tid: sent.append(name), period_seconds=1
    )
    client.close()
    assert result["status"] == "planned"
    # When Prometheus scrapes
    samples = next_scrape(metrics)
    # Then the last cycle finished just now and took a positive, short time
    finished = value(samples, "chip_orchestrator_last_cycle_timestamp_seconds")
    assert time.time() - 60 < finished <= time.time()
    assert 0 < value(samples, "chip_orchestrator_cycle_duration_seconds") < 30


def test_a_redis_outage_never_fails_the_cycle_bookkeeping() -> None:
    # Given a Redis client pointing at a port where nothing listens (held: nobody can start to)
    closed = ClosedPort()
    dead = redis.Redis(host="127.0.0.1", port=closed.port, socket_connect_timeout=0.5)
    # When the cycle records its timing, Then nothing is raised
    try:
        cycle_timing.record(dead, 0.25)
    finally:
        closed.close()


def test_an_unreachable_database_is_reported_not_crashed(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Given a metrics process whose database does not exist
    missing = database_url.rsplit("/", 1)[0] + "/chiporch_no_such_database"
    proc = MetricsProcess(ops_env(missing, redis_url), tmp_path, interval=INTERVAL)
    try:
        # When Prometheus scrapes twice
        proc.scrape()
        samples = next_scrape(proc)
    finally:
        proc.stop()
    # Then it answers, says the database is down, counts the errors and shows no stale numbers
    assert value(samples, "chip_orchestrator_up") == 0
    assert value(samples, "chip_orchestrator_scrape_errors_total", source="database") >= 2
    assert not any(name == "chip_orchestrator_chips" for name, _ in samples)


def test_sigterm_stops_the_metrics_process_with_exit_code_zero(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Given a running metrics process
    proc = MetricsProcess(ops_env(database_url, redis_url), tmp_path, interval=INTERVAL)
    # When it gets SIGTERM (docker stop, systemd), Then it exits 0
    assert proc.stop() == 0


def test_the_pool_targets_are_exported_beside_the_counts(
    clean_db: sa.Engine, metrics: MetricsProcess
) -> None:
    # Given a pool_config with its own targets
    set_config(clean_db, producao_min=7, producao_max=9, ready_min=2, warmup_buffer=5)
    # When Prometheus scrapes
    samples = next_scrape(metrics)
    # Then each target carries the configured value (dashboards draw counts against them)
    name = "chip_orchestrator_pool_target"
    assert value(samples, name, target="producao_min") == 7
    assert value(samples, name, target="producao_max") == 9
    assert value(samples, name, target="ready_min") == 2
    assert value(samples, name, target="warmup_buffer") == 5


def test_the_purchase_back_off_is_exported_while_it_lasts(
    clean_db: sa.Engine, metrics: MetricsProcess
) -> None:
    # Given purchases open, then two failed purchase batches (the pause grows: 1 min, then 2)
    open_ = next_scrape(metrics)
    with clean_db.begin() as conn:
        conn.execute(sa.text("DELETE FROM purchase_backoff"))
        backoff.record_failure(conn, "out_of_stock", "sem estoque")
        conn.execute(sa.text("UPDATE purchase_backoff SET paused_until = now()"))
    with clean_db.begin() as conn:
        backoff.record_failure(conn, "out_of_stock", "sem estoque")
    # When Prometheus scrapes
    paused = next_scrape(metrics)
    # Then the gauges show the pause left (up to 2 minutes) and the failures in a row
    assert value(open_, "chip_orchestrator_purchases_paused_seconds") == 0
    assert value(open_, "chip_orchestrator_purchase_consecutive_failures") == 0
    assert 60 < value(paused, "chip_orchestrator_purchases_paused_seconds") <= 120
    assert value(paused, "chip_orchestrator_purchase_consecutive_failures") == 2


def test_a_corrected_count_drift_is_exported_by_status(
    clean_db: sa.Engine, metrics: MetricsProcess, redis_client: redis.Redis
) -> None:
    # Given 5 active chips another service bulk-loaded with the triggers off
    set_config(clean_db, producao_min=0, ready_min=0, warmup_buffer=0)
    with clean_db.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        for _ in range(5):
            conn.execute(
                sa.insert(chips).values(
                    telefone=f"+55119{time.time_ns() % 10**8:08d}", ddd=11, status="active"
                )
            )
    # When a cycle checks the counts and Prometheus scrapes
    dispatch.run_cycle(clean_db, redis_client, lambda *_: None, period_seconds=60)
    samples = next_scrape(metrics)
    # Then the drift it corrected, and the correction, are exported for that status
    assert value(samples, "chip_orchestrator_status_tally_drift", status="active") == 5
    assert value(samples, "chip_orchestrator_status_tally_drift", status="ready") == 0
    assert value(samples, "chip_orchestrator_status_tally_corrections_total", status="active") == 1
    assert 0 <= value(samples, "chip_orchestrator_status_tally_check_age_seconds") < 3600
    assert value(samples, "chip_orchestrator_chips", status="active") == 5
