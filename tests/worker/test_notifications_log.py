"""Without SLACK_BOT_TOKEN, notifications go to the worker's log, never silently nowhere.

Uses the session worker of tests/worker/conftest.py, which runs with no SLACK_* variables.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from celery import Celery

from orchestrator.store.schema import outbox
from tests.factories import make_chip
from tests.worker.conftest import WorkerProcess

pytestmark = pytest.mark.worker


def test_without_a_slack_token_messages_go_to_the_worker_log_and_are_marked_so(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery
) -> None:
    # Given a replacement that queued a message, on a worker with no Slack token
    make_chip(clean_db, "ready", trust=95)
    chip = make_chip(clean_db, "active", trust=10)
    replaced = celery_client.send_task("orchestrator.replace_chip", args=[chip]).get(timeout=30)
    assert replaced["status"] == "replaced"
    # When the outbox is delivered
    outcome = celery_client.send_task("orchestrator.deliver_notifications").get(timeout=30)
    # Then the message is in the worker's log, and its row says it went there
    assert outcome["delivered"] >= 1 and outcome["pending"] == 0
    with clean_db.connect() as conn:
        (row,) = conn.execute(sa.select(outbox)).all()
    assert row.delivered_via == "log" and row.delivered_at is not None
    assert row.texto.splitlines()[0] in worker.log_path.read_text()
