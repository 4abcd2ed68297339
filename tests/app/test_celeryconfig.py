"""celeryconfig.py chooses its broker settings by CELERY_BROKER_URL's scheme, and routes by role."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from orchestrator.app.settings import (
    IO_QUEUES,
    ROOT,
    SWAP_QUEUES,
    WORKER_QUEUES,
    broker_kind,
    get_settings,
)
from orchestrator.errors import ConfigError

REDIS = "redis://127.0.0.1:6379/0"
#: Tasks that wait on someone else (Salvy, Slack): the I/O worker's, never the swap worker's.
SLOW_IO_TASKS = {
    "orchestrator.provision_chip",
    "orchestrator.cancel_chip",
    "orchestrator.reconcile_provisioning",
    "orchestrator.deliver_notifications",
    # A Salvy webhook re-reads the account at Salvy before it acts.
    "orchestrator.salvy_event",
}


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """celeryconfig's settings as a fresh process would read them with this broker URL."""

    def run(broker: str | None) -> dict[str, Any]:
        monkeypatch.setenv("REDIS_URL", REDIS)
        if broker is None:
            monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
        else:
            monkeypatch.setenv("CELERY_BROKER_URL", broker)
        get_settings.cache_clear()
        return runpy.run_path(str(ROOT / "celeryconfig.py"))

    yield run
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "url", ["amqp://guest:guest@127.0.0.1:5672//", "pyamqp://rabbit/chip", "amqps://rabbit:5671/x"]
)
def test_on_amqp_a_lost_connection_kills_running_tasks_instead_of_running_them_twice(load, url):
    conf = load(url)

    assert conf["BROKER"] == "amqp"
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is True
    assert "visibility_timeout" not in conf["broker_transport_options"]
    assert conf["broker_transport_options"]["confirm_publish"] is True
    assert conf["result_backend"] == REDIS


@pytest.mark.parametrize("url", [None, "redis://127.0.0.1:6379/3", "rediss://cache:6380/0"])
def test_on_redis_running_tasks_finish_and_redelivery_waits_for_the_visibility_timeout(load, url):
    conf = load(url)

    assert conf["BROKER"] == "redis"
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert conf["broker_transport_options"]["visibility_timeout"] >= 3600
    assert conf["result_backend_transport_options"]["visibility_timeout"] >= 3600


@pytest.mark.parametrize("url", ["sqs://", "kafka://broker:9092", "127.0.0.1:5672", ""])
def test_an_unsupported_broker_scheme_is_a_clear_config_error(url):
    with pytest.raises(ConfigError, match="CELERY_BROKER_URL must start with"):
        broker_kind(url)


def test_a_broker_error_never_shows_the_url_and_its_password():
    with pytest.raises(ConfigError) as error:
        broker_kind("guest:s3cret@rabbit:5672")

    assert "s3cret" not in str(error.value)


@pytest.mark.parametrize("url", ["amqp://rabbit//", REDIS])
def test_each_queue_has_a_binding_of_its_own_so_no_message_is_copied_into_two(load, url):
    conf = load(url)

    bindings = [(q.exchange.name, q.routing_key) for q in conf["task_queues"]]
    assert {q.name for q in conf["task_queues"]} == set(WORKER_QUEUES)
    assert bindings == [(q.name, q.name) for q in conf["task_queues"]]


def test_the_two_worker_roles_split_every_queue_between_them():
    assert set(SWAP_QUEUES) | set(IO_QUEUES) == set(WORKER_QUEUES)
    assert not set(SWAP_QUEUES) & set(IO_QUEUES)
    assert "celery" in SWAP_QUEUES  # where a foreign service's plain send_task lands


def registered_task_names() -> list[str]:
    """Every orchestrator.* task the app registers (read in a child: no app left configured here)."""
    script = "from tasks import app; print(*sorted(n for n in app.tasks if n.startswith('orchestrator.')))"
    env = {**os.environ, "REDIS_URL": REDIS, "DATABASE_URL": "postgresql+psycopg://x@127.0.0.1/x"}
    env.pop("CELERY_BROKER_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_slow_io_tasks_go_to_the_io_worker_and_every_other_task_to_the_swap_worker(load):
    conf = load(REDIS)
    app = Celery("routes")
    app.conf.update(task_routes=conf["task_routes"], task_queues=conf["task_queues"])
    app.conf.task_default_queue = conf["task_default_queue"]
    ours = registered_task_names()

    routed = {name: app.amqp.router.route({}, name)["queue"].name for name in ours}
    assert set(ours) >= SLOW_IO_TASKS
    assert {n for n, q in routed.items() if q in IO_QUEUES} == SLOW_IO_TASKS
    assert {routed[n] for n in ours if n not in SLOW_IO_TASKS} <= set(SWAP_QUEUES)


def test_redbeat_keeps_its_lock_in_redis_on_either_broker_and_renews_it_every_loop(load):
    conf = load("amqp://rabbit//")

    assert conf["redbeat_redis_url"] == REDIS
    assert conf["redbeat_lock_timeout"] >= 3 * conf["beat_max_loop_interval"]
