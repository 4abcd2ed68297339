"""Task events: off in a worker until someone watches (Flower), on from `enable_events`."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from celery import Celery

from tests.support.pg_waits import wait_for
from tests.worker.conftest import WorkerProcess

pytestmark = pytest.mark.worker

REPLACE = "orchestrator.replace_chip"


class Events:
    """Every event the workers publish, collected on a thread (as Flower's receiver does)."""

    def __init__(self, app: Celery) -> None:
        self.seen: list[dict] = []
        self._app = app
        self._receiver = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self._app.connection_for_read() as conn:
            self._receiver = self._app.events.Receiver(conn, handlers={"*": self.seen.append})
            self._receiver.capture(limit=None, timeout=None, wakeup=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(10)

    def of_task(self, task_id: str) -> list[str]:
        return [e["type"] for e in list(self.seen) if e.get("uuid") == task_id]


@pytest.fixture
def events(celery_client: Celery, worker: WorkerProcess) -> Iterator[Events]:
    collected = Events(celery_client)
    collected.start()
    # Listening once the worker's own events (heartbeats, sent whatever the task events) arrive
    wait_for(lambda: any(e["type"].startswith("worker-") for e in list(collected.seen)))
    yield collected
    celery_client.control.broadcast("disable_events", reply=True, timeout=10)
    collected.stop()


def test_a_worker_sends_no_task_events_until_enable_events_and_keeps_every_result(
    celery_client: Celery, events: Events
) -> None:
    # Given a worker started with the default configuration, watched by an event receiver
    # When a task runs
    first = celery_client.send_task(REPLACE, args=["not-a-chip"])
    assert first.get(timeout=30)["status"] == "rejected"  # its result is stored all the same
    # And ops (or Flower, on its own when it starts) enable events, then a second task runs
    replies = celery_client.control.broadcast("enable_events", reply=True, timeout=10)
    assert replies, "no worker answered enable_events"
    second = celery_client.send_task(REPLACE, args=["not-a-chip-either"])
    assert second.get(timeout=30)["status"] == "rejected"
    # Then the second task's events arrive: received, started, succeeded
    wait_for(lambda: "task-succeeded" in events.of_task(second.id))
    assert sorted(events.of_task(second.id)) == ["task-received", "task-started", "task-succeeded"]
    # And the first task, which ran before (same worker, same event stream), sent none
    assert events.of_task(first.id) == []
    # And both results stay readable by id (what Flower's task page and `--wait` read)
    assert celery_client.AsyncResult(first.id).state == "SUCCESS"
    assert celery_client.AsyncResult(second.id).result["status"] == "rejected"
