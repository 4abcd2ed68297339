"""Flower as ops use it: a real `celery flower` and a real worker on the test broker.

Ops dispatch tasks through Flower's HTTP API (or its UI, which calls the same endpoints) with basic
auth, and read each task's name, arguments and JSON result there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from celery import Celery

from orchestrator.store.schema import conversation_chips
from tests.factories import add_conversations, chip_row, make_chip
from tests.ops.conftest import Service, ops_env
from tests.support.pg_waits import wait_for
from tests.support.private_stack import broker_url_for
from tests.worker.conftest import WorkerProcess, running_worker, worker_env

pytestmark = pytest.mark.worker

AUTH = ("ops", "secret")


class FlowerProcess(Service):
    """`python -m celery -A tasks flower` with basic auth, on the loopback port it picks when it binds."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        args = ["-m", "celery", "-A", "tasks", "flower", "--address=127.0.0.1", "--port=0"]
        super().__init__([*args, "--basic-auth=ops:secret"], env, log_dir / "flower.log")
        self.url = f"http://127.0.0.1:{self.bound_port()}"
        self.wait_http(f"{self.url}/healthcheck")

    def dispatch(
        self, task: str, body: dict, auth: tuple[str, str] | None = AUTH
    ) -> requests.Response:
        """POST /api/task/async-apply/<task>, as the UI's and ops' scripts do."""
        return requests.post(
            f"{self.url}/api/task/async-apply/{task}", json=body, auth=auth, timeout=10
        )

    def result(self, task_id: str) -> dict:
        """GET /api/task/result/<id> (read from the result backend)."""
        response = requests.get(f"{self.url}/api/task/result/{task_id}", auth=AUTH, timeout=10)
        response.raise_for_status()
        return response.json()

    def finished(self, task_id: str) -> dict | None:
        """The task's result document once it succeeded, else None."""
        doc = self.result(task_id)
        return doc if doc.get("state") == "SUCCESS" else None


@pytest.fixture(scope="module")
def flower_worker(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A real prefork worker for this module only (stopped before other modules run)."""
    client = Celery("flower-test-client", broker=broker_url_for(redis_url))
    env = worker_env(database_url, redis_url)
    try:
        with running_worker(env, tmp_path_factory.mktemp("fw"), client, concurrency=2) as proc:
            yield proc
    finally:
        client.close()


@pytest.fixture(scope="module")
def flower(
    database_url: str,
    redis_url: str,
    flower_worker: WorkerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FlowerProcess]:
    env = ops_env(database_url, redis_url)
    if (broker := broker_url_for(redis_url)) != redis_url:
        env["CELERY_BROKER_URL"] = broker
    proc = FlowerProcess(env, tmp_path_factory.mktemp("flower"))
    watching(proc)
    yield proc
    proc.stop()


def watching(flower: FlowerProcess) -> None:
    """Wait until Flower has turned the workers' task events on (workers start with them off;
    Flower sends enable_events a few seconds after it starts, then every few seconds): a
    harmless task (a malformed chip id, answered rejected) is sent until Flower sees one run."""

    def seen() -> bool:
        task_id = flower.dispatch("orchestrator.replace_chip", {"args": ["flower-probe"]}).json()[
            "task-id"
        ]
        wait_for(lambda: flower.finished(task_id), timeout=30)
        response = requests.get(f"{flower.url}/api/task/info/{task_id}", auth=AUTH, timeout=10)
        return response.status_code == 200 and response.json().get("state") == "SUCCESS"

    wait_for(seen, timeout=120, every=0.5)


def test_ops_replace_a_banned_chip_through_flowers_api(
    clean_db: sa.Engine, flower: FlowerProcess
) -> None:
    # Given an active chip with open conversations and a ready chip to take its place
    old = make_chip(clean_db, "active", trust=88)
    add_conversations(clean_db, old, 3)
    ready = make_chip(clean_db, "ready", trust=97)
    # When ops dispatch orchestrator.replace_chip from Flower with basic auth
    response = flower.dispatch(
        "orchestrator.replace_chip", {"args": [old], "kwargs": {"reason": "banned"}}
    )
    assert response.status_code == 200, response.text
    task_id = response.json()["task-id"]
    # Then the worker swapped the chips in the database
    doc = wait_for(lambda: flower.finished(task_id), timeout=30)
    assert chip_row(clean_db, ready).status == "active"
    assert chip_row(clean_db, old).status == "banned"
    with clean_db.connect() as conn:
        moved = conn.execute(
            sa.select(sa.func.count()).where(
                conversation_chips.c.chip_id == ready, conversation_chips.c.active
            )
        ).scalar_one()
    assert moved == 3
    # And the task's JSON result is readable in Flower
    assert doc["result"]["status"] == "replaced"
    assert doc["result"]["replacement_id"] == ready
    assert doc["result"]["conversas_migradas"] == 3


def test_flower_shows_the_task_name_arguments_and_result(
    clean_db: sa.Engine, flower: FlowerProcess
) -> None:
    # Given a replace dispatched from Flower that finished
    old = make_chip(clean_db, "active", trust=20)
    make_chip(clean_db, "ready", trust=95)
    task_id = flower.dispatch("orchestrator.replace_chip", {"args": [old]}).json()["task-id"]
    wait_for(lambda: flower.finished(task_id), timeout=30)

    # When ops open the task in Flower (the task page reads /api/task/info from worker events)
    def info() -> dict | None:
        response = requests.get(f"{flower.url}/api/task/info/{task_id}", auth=AUTH, timeout=10)
        doc = response.json() if response.status_code == 200 else {}
        return doc if doc.get("state") == "SUCCESS" else None

    doc = wait_for(info, timeout=20)
    # Then they see its stable name, the chip id it got and a result with a status
    assert doc["name"] == "orchestrator.replace_chip"
    assert old in doc["args"]
    assert "'status': 'replaced'" in doc["result"]


def test_a_malformed_chip_id_from_flower_is_answered_rejected(
    clean_db: sa.Engine, flower: FlowerProcess
) -> None:
    # Given an active chip and a ready one
    chip = make_chip(clean_db, "active", trust=10)
    make_chip(clean_db, "ready", trust=95)
    # When ops paste a wrong id into Flower
    task_id = flower.dispatch("orchestrator.replace_chip", {"args": ["55119999"]}).json()["task-id"]
    # Then the result says rejected with a reason, and nothing changed
    doc = wait_for(lambda: flower.finished(task_id), timeout=30)
    assert doc["result"]["status"] == "rejected"
    assert doc["result"]["reason"]
    assert chip_row(clean_db, chip).status == "active"


@pytest.mark.parametrize(
    "payload",
    [
        {"args": [], "kwargs": {"chip_id": 42}},
        {"args": ["a", "b", "c"]},
        {"args": ["CHIP"], "kwargs": {"reason": "x" * 5000}},
    ],
    ids=["wrong-type", "wrong-count", "huge-reason"],
)
def test_bad_arguments_from_flower_are_rejected_and_change_nothing(
    clean_db: sa.Engine, flower: FlowerProcess, payload: dict
) -> None:
    # Given an active low-trust chip and a ready chip
    chip = make_chip(clean_db, "active", trust=10)
    make_chip(clean_db, "ready", trust=95)
    payload = {**payload, "args": [chip if a == "CHIP" else a for a in payload["args"]]}
    # When ops dispatch the task with bad arguments through Flower
    task_id = flower.dispatch("orchestrator.replace_chip", payload).json()["task-id"]
    # Then the result is rejected with a reason, and the chip is untouched
    doc = wait_for(lambda: flower.finished(task_id), timeout=30)
    assert doc["result"]["status"] == "rejected"
    assert doc["result"]["reason"]
    assert chip_row(clean_db, chip).status == "active"


@pytest.mark.parametrize("auth", [None, ("ops", "wrong")], ids=["no-credentials", "wrong-password"])
def test_flower_answers_401_without_valid_credentials(
    clean_db: sa.Engine, flower: FlowerProcess, auth: tuple[str, str] | None
) -> None:
    # Given an active chip and a ready one
    chip = make_chip(clean_db, "active", trust=10)
    make_chip(clean_db, "ready", trust=95)
    # When someone without valid credentials calls the API or opens the UI
    dispatched = flower.dispatch("orchestrator.replace_chip", {"args": [chip]}, auth=auth)
    page = requests.get(f"{flower.url}/tasks", auth=auth, timeout=10)
    # Then both answer 401 and the chip is untouched
    assert dispatched.status_code == 401
    assert page.status_code == 401
    assert chip_row(clean_db, chip).status == "active"
