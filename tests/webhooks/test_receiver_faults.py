"""The receiver when what it writes to is down: 503 `unavailable` (the sender retries later),
never a 2xx that would make Evolution or Svix drop the event, and still no token in its log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from orchestrator.dev.receiver_process import ReceiverProcess, running_receiver
from tests.support.webhooks import SECRET, TOKEN, close, post_evolution, post_salvy
from tests.worker.conftest import worker_env

#: A port nothing listens on: connections are refused at once.
CLOSED = "127.0.0.1:1"


@pytest.fixture(scope="module")
def cut_off(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    """A receiver whose database and broker are unreachable (it starts anyway: liveness)."""
    env = worker_env(
        f"postgresql+psycopg://postgres@{CLOSED}/postgres",
        redis_url,
        WEBHOOK_TOKEN=TOKEN,
        SALVY_WEBHOOK_SECRET=SECRET,
        CELERY_BROKER_URL=f"redis://{CLOSED}/0",
    )
    log = tmp_path_factory.mktemp("receiver") / "receiver.log"
    with running_receiver(env, log) as proc:
        yield proc


def test_an_event_it_cannot_record_is_answered_503_for_the_sender_to_retry(
    cut_off: ReceiverProcess,
) -> None:
    # Given a receiver whose database is down: a ban cannot be recorded
    answer = post_evolution(cut_off.url, close("any-instance", 403))
    # Then 503 `unavailable`, not a 2xx that would end Evolution's retries
    assert answer.status_code == 503
    assert answer.json()["status"] == "unavailable"
    # And liveness still answers (the process is fine; its dependencies are not)
    assert requests.get(f"{cut_off.url}/healthz", timeout=5).status_code == 200


def test_a_salvy_event_it_cannot_enqueue_is_answered_503(cut_off: ReceiverProcess) -> None:
    # Given a receiver whose broker is down, and a correctly signed Salvy delivery
    answer = post_salvy(cut_off.url, "phone-account.blocked", "acc-1")
    # Then 503: Svix retries the delivery later
    assert answer.status_code == 503
    assert answer.json()["status"] == "unavailable"


def test_the_failures_log_holds_no_token(cut_off: ReceiverProcess) -> None:
    requests.post(
        f"{cut_off.url}/webhooks/evolution?token={TOKEN}", json=close("x", 403), timeout=15
    )
    log = cut_off.log()
    assert "unavailable" in log
    assert TOKEN not in log and SECRET not in log
