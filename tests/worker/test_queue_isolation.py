"""Compose's workers, started as compose starts them: hanging Salvy calls never delay a swap.

Every `celery -A tasks worker` service of docker-compose.yml runs here as a real process with
that service's -Q and --concurrency, on a broker of this module's own. Salvy (the stand-in) holds
every purchase until the test lets go.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa
import yaml
from celery import Celery

from orchestrator.app.settings import ROOT
from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.store.schema import chips
from tests.factories import chip_row, make_chip, set_config
from tests.support.pg_waits import wait_for
from tests.support.private_stack import base_redis_url, claim_redis_db
from tests.worker.conftest import WorkerProcess, log_file, worker_env

pytestmark = pytest.mark.worker

#: Purchases left hanging in Salvy at once (more than the old single worker's 4 processes).
HANGING = 4


def compose_workers() -> dict[str, tuple[str, int]]:
    """Each worker service of docker-compose.yml: (its -Q queues, its --concurrency)."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    found = {}
    for name, service in services.items():
        command = [str(part) for part in service.get("command") or []]
        if command[:4] != ["celery", "-A", "tasks", "worker"]:
            continue
        option = dict(itertools.pairwise(command))
        found[name] = (option["-Q"], int(option["--concurrency"]))
    return found


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with claim_redis_db(base_redis_url()) as url:
        yield url


@pytest.fixture(scope="module")
def worker(
    database_url: str,
    redis_url: str,
    salvy: SalvyStandin,
    celery_client: Celery,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, WorkerProcess]]:
    """Compose's worker services, each a real worker process (a Salvy call may wait 60 s)."""
    env = worker_env(
        database_url,
        redis_url,
        SALVY_API_URL=salvy.url,
        SALVY_API_TOKEN="salvy_test_secret",
        SALVY_READ_TIMEOUT_SECONDS="60",
    )
    log_dir = tmp_path_factory.mktemp("compose-workers")
    procs: dict[str, WorkerProcess] = {}
    try:
        for name, (queues, concurrency) in compose_workers().items():
            procs[name] = WorkerProcess(
                env, log_file(log_dir), concurrency=concurrency, queues=queues
            )
        for proc in procs.values():
            proc.wait_ready(celery_client)
        yield procs
    finally:
        salvy.set_faults(hold_purchases=False)
        for proc in procs.values():
            proc.stop()


def in_flight(engine: sa.Engine) -> int:
    """Purchases recorded and not yet confirmed by Salvy (chips in `provisioning`)."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(chips.c.status == "provisioning")
        ).scalar_one()


def test_four_purchases_hanging_in_salvy_do_not_delay_a_swap(
    clean_db: sa.Engine,
    worker: dict[str, WorkerProcess],
    celery_client: Celery,
    salvy: SalvyStandin,
    redis_client: redis.Redis,
) -> None:
    # Given Salvy holds every purchase, and a cycle that dispatched four purchases (its routes)
    salvy.reset()
    salvy.set_faults(hold_purchases=True)
    set_config(
        clean_db,
        warmup_buffer=HANGING,
        max_provisions_per_cycle=HANGING,
        producao_min=0,
        ready_min=0,
    )
    redis_client.delete("chiporch:cycle:slot")
    plan = celery_client.send_task("orchestrator.run_cycle").get(timeout=30)
    assert plan["dispatched"]["provision_chip"] == HANGING
    wait_for(lambda: salvy.held_purchases == HANGING)
    # When a degraded chip is to be replaced, sent by a plain client as another service does
    old = make_chip(clean_db, "active", trust=10)
    ready = make_chip(clean_db, "ready", trust=95)
    outcome = celery_client.send_task("orchestrator.replace_chip", args=[old]).get(timeout=30)
    # Then the swap is done while all four purchases still hang in Salvy
    assert (outcome["status"], outcome["replacement_id"]) == ("replaced", ready)
    assert salvy.held_purchases == HANGING
    assert in_flight(clean_db) == HANGING
    assert salvy.purchases == 0
    # And once Salvy answers, the four purchases complete (nothing was lost meanwhile)
    salvy.set_faults(hold_purchases=False)
    wait_for(lambda: in_flight(clean_db) == 0, timeout=60)
    assert salvy.purchases == HANGING
    assert chip_row(clean_db, ready).status == "active"
