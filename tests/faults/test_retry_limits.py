"""Bounded retries on real workers: no countdown past the visibility timeout, no cycle retried."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from orchestrator.dev.salvy_standin import SalvyStandin
from tests.factories import make_chip, set_config
from tests.faults.conftest import Cluster, RedisServer
from tests.support.private_stack import celery_client_for

pytestmark = pytest.mark.faults

#: The worker's visibility timeout in these tests: retries may wait at most 70 - 60 = 10 s.
VISIBILITY = 70


def retries_logged(log: str, task_id: str) -> list[float]:
    """The "Retry in Ns" countdowns a worker logged for one task."""
    return [float(s) for s in re.findall(rf"\[{task_id}\] retry: Retry in ([\d.]+)s", log)]


def test_a_retry_after_longer_than_the_visibility_timeout_is_capped_below_it(
    clean_db: sa.Engine, cluster: Cluster, env: dict, salvy: SalvyStandin, celery_client: Celery
) -> None:
    # Given a worker whose broker redelivers unacked messages after 70 s
    options = json.dumps({"visibility_timeout": VISIBILITY})
    worker = cluster.worker(env, 1, f"broker_transport_options=(dict){options}")
    # And Salvy rate-limits the next call, asking us to come back in two hours
    salvy.set_faults(rate_limit_next=1, retry_after="7200")
    # When a purchase runs
    result = celery_client.send_task("orchestrator.provision_chip")
    outcome = result.get(timeout=45)
    # Then its retry was scheduled 10 s out (70 s - 60 s margin), not 7200 s, and it bought
    assert retries_logged(worker.log(), result.id) == [10.0]
    assert outcome["status"] == "provisioned"
    assert salvy.posts == salvy.purchases == 1


@pytest.fixture
def locks_refused(private_redis: RedisServer) -> Iterator[str]:
    """A Redis URL (the worker's REDIS_URL) whose user may not write the "queued" markers."""
    admin = redis.Redis(port=private_redis.port)
    admin.execute_command(
        "ACL", "SETUSER", "worker", "on", ">worker-pw", "resetkeys", "~celery-task-meta-*",
        "~chiporch:deliveries:*", "~chiporch:cycle:*", "~chiporch:lock:*", "resetchannels",
        "&*", "+@all",
    )  # fmt: skip
    admin.close()
    yield f"redis://worker:worker-pw@127.0.0.1:{private_redis.port}/0"


def test_a_cycle_that_fails_is_not_retried_the_next_tick_is_the_retry(
    clean_db: sa.Engine,
    cluster: Cluster,
    env: dict,
    redis_url: str,
    private_redis: RedisServer,
    locks_refused: str,
) -> None:
    # Given a chip to replace, and a Redis that refuses the cycle's "queued" markers
    set_config(clean_db, auto_provision=False)
    make_chip(clean_db, "active", trust=10)
    worker = cluster.worker({**env, "CELERY_BROKER_URL": redis_url, "REDIS_URL": locks_refused})
    client = celery_client_for(redis_url)
    client.conf.result_backend = private_redis.url
    # When orchestrator.run_cycle runs and hits that transient failure
    result = client.send_task("orchestrator.run_cycle")
    with pytest.raises(Exception, match="redis unavailable"):
        result.get(timeout=30)
    client.close()
    # Then it failed once, with no retry scheduled (beat sends the next cycle anyway)
    assert result.state == "FAILURE"
    assert retries_logged(worker.log(), result.id) == []
