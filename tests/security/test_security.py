"""Only JSON gets in, secrets never get out, hostile text stays data."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.engine import make_url

from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.store.schema import operations, outbox
from tests.factories import add_conversations, chip_row, make_chip
from tests.faults.conftest import Cluster, assert_no_violations, worker_env
from tests.support.fake_slack import FakeSlack
from tests.support.pg_waits import wait_for
from tests.support.private_stack import broker_url_for

pytestmark = pytest.mark.worker


class _RunsCode:
    """Unpickling this runs a shell command: what an attacker would put in a pickled message."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_a_pickled_message_is_refused_and_never_runs(
    clean_db: sa.Engine, cluster: Cluster, env: dict, redis_url: str, tmp_path: Path
) -> None:
    # Given a worker, and a replaceable chip
    old = make_chip(clean_db, "active", trust=30)
    make_chip(clean_db, "ready", trust=95)
    worker = cluster.worker(env, concurrency=1)
    # When an attacker with broker access sends replace_chip pickled, with a code-running argument
    marker = tmp_path / "pwned"
    attacker = Celery("attacker", broker=broker_url_for(redis_url))
    attacker.conf.update(task_serializer="pickle", accept_content=["pickle", "json"])
    attacker.send_task(
        "orchestrator.replace_chip", args=[old, _RunsCode(marker)], serializer="pickle"
    )
    # Then the worker refuses to deserialize it, and nothing ran or changed
    wait_for(lambda: "ContentDisallowed" in worker.log() or "untrusted content" in worker.log())
    time.sleep(1)
    assert not marker.exists()
    assert chip_row(clean_db, old).status == "active"
    assert count(clean_db, operations) == 0
    assert "replace_chip[" not in worker.log().split("untrusted")[-1]  # never received as a task
    attacker.close()


SALVY_SECRET = f"salvy_test_{uuid.uuid4().hex}"
SLACK_SECRET = f"xoxb-{uuid.uuid4().hex}"
DB_SECRET = f"pw{uuid.uuid4().hex}"


def test_secrets_never_reach_logs_results_or_exceptions(
    clean_db: sa.Engine, cluster: Cluster, database_url: str, redis_url: str, salvy: SalvyStandin
) -> None:
    # Given a worker whose Salvy and Slack tokens and database password are secrets, logging DEBUG
    slack = FakeSlack()  # its token differs from ours: every post is refused (invalid_auth)
    slack.start()
    url = make_url(database_url).set(password=DB_SECRET).render_as_string(hide_password=False)
    salvy.reset()
    env = worker_env(
        url, redis_url, SALVY_API_URL=salvy.url, SALVY_API_TOKEN=SALVY_SECRET,
        SLACK_BOT_TOKEN=SLACK_SECRET, SLACK_API_URL=slack.base_url,
    )  # fmt: skip
    worker = cluster.worker(env, 2, "-l", "DEBUG")
    client = Celery("client", broker=broker_url_for(redis_url), backend=redis_url)
    client.conf.update(accept_content=["json"], result_accept_content=["json"])
    # When a full run happens, with Salvy errors (500s, 429) and Slack errors (refusal, outage)
    old = make_chip(clean_db, "active", trust=30)
    add_conversations(clean_db, old, 2)
    make_chip(clean_db, "ready", trust=95)
    salvy.set_faults(fail_next=2, rate_limit_next=1)
    results = [client.send_task("orchestrator.replace_chip", args=[old, "low_trust"])]
    results += [client.send_task("orchestrator.provision_chip") for _ in range(2)]
    results += [client.send_task("orchestrator.provision_chip", kwargs={"ddd": 5})]
    results += [client.send_task("orchestrator.cancel_chip", args=[str(uuid.uuid4())])]
    outcomes = [r.get(timeout=90, propagate=False) for r in results]
    results = [client.send_task("orchestrator.deliver_notifications")]
    results[0].get(timeout=60, propagate=False)
    slack.down = True
    make_chip(clean_db, "banned", trust=10)
    deliver = client.send_task("orchestrator.deliver_notifications")
    wait_for(lambda: "retry" in worker.log().lower() or deliver.ready(), 30)
    slack.stop()
    # Then no secret appears in the worker log, the task results, the stored errors or the outbox
    stored = json.dumps(outcomes, default=str)
    stored += json.dumps([str(deliver.info)], default=str)
    with clean_db.connect() as conn:
        stored += " ".join(str(e) for e in conn.execute(sa.select(operations.c.erro)).scalars())
        stored += " ".join(
            str(e) for e in conn.execute(sa.select(outbox.c.last_error, outbox.c.texto)).all()
        )
    raw = redis.Redis.from_url(redis_url)
    stored += " ".join(str(raw.get(k)) for k in raw.scan_iter("celery-task-meta-*"))
    log = worker.log()
    assert "provisioned" in stored and "invalid_auth" in (log + stored)
    for secret in (SALVY_SECRET, SLACK_SECRET, DB_SECRET):
        assert secret not in log
        assert secret not in stored
    client.close()


HOSTILE = [
    "'; DROP TABLE chips; --",
    "{{7*7}} ${7*7} %(x)s {0.__class__}",
    "$(touch /tmp/chiporch-pwned) `id`",
    "<script>alert(1)</script> *negrito* <!channel>",
]


@pytest.mark.parametrize("reason", HOSTILE)
def test_a_hostile_reason_is_stored_as_data_and_nothing_runs(
    clean_db: sa.Engine, cluster: Cluster, env: dict, celery_client: Celery, reason: str
) -> None:
    # Given a worker and a replaceable chip
    old = make_chip(clean_db, "active", trust=30)
    make_chip(clean_db, "ready", trust=95)
    cluster.worker(env, concurrency=1)
    # When another service sends replace_chip with a hostile reason
    result = celery_client.send_task("orchestrator.replace_chip", args=[old, reason]).get(
        timeout=30
    )
    # Then the replacement happened and the reason is stored verbatim, as data
    assert result["status"] == "replaced"
    with clean_db.connect() as conn:
        meta, motivo = conn.execute(sa.select(operations.c.metadata, operations.c.motivo)).one()
    assert meta["reason"] == reason
    assert reason in motivo
    assert count(clean_db, operations) == 1  # the chips table is still there, nothing else ran
    assert not Path("/tmp/chiporch-pwned").exists()
    assert_no_violations(clean_db)


@pytest.mark.parametrize("reason", ["x" * 100_000, {"$ne": 1}, ["a"], 42])
def test_a_huge_or_non_text_reason_is_rejected_and_changes_nothing(
    clean_db: sa.Engine, cluster: Cluster, env: dict, celery_client: Celery, reason: object
) -> None:
    # Given a worker and a replaceable chip
    old = make_chip(clean_db, "active", trust=30)
    cluster.worker(env, concurrency=1)
    # When replace_chip arrives with a huge or non-text reason
    result = celery_client.send_task("orchestrator.replace_chip", args=[old, reason]).get(
        timeout=30
    )
    # Then it is rejected with a reason, and nothing changed
    assert result["status"] == "rejected" and result["reason"]
    assert chip_row(clean_db, old).status == "active"
    assert count(clean_db, operations) == 0
