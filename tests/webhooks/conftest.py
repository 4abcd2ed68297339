"""The receiver as a real process (`python -m orchestrator webhooks`), one per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.dev.receiver_process import ReceiverProcess, running_receiver
from tests.support.private_stack import base_redis_url, claim_redis_db
from tests.support.webhooks import SECRET, TOKEN
from tests.worker.conftest import worker_env


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis DB (and so a broker) of the module's own: what the receiver enqueues here is never
    run by another module's worker against its data."""
    with claim_redis_db(base_redis_url()) as url:
        yield url


@pytest.fixture(scope="module")
def receiver_extra_env() -> dict[str, str]:
    """What a module adds to the receiver's environment (e.g. SALVY_API_URL)."""
    return {}


@pytest.fixture(scope="module")
def receiver(
    database_url: str,
    redis_url: str,
    receiver_extra_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ReceiverProcess]:
    """A receiver on a free port, on the test database and the module's broker."""
    env = worker_env(
        database_url,
        redis_url,
        WEBHOOK_TOKEN=TOKEN,
        SALVY_WEBHOOK_SECRET=SECRET,
        **receiver_extra_env,
    )
    log = tmp_path_factory.mktemp("receiver") / "receiver.log"
    with running_receiver(env, log) as proc:
        yield proc
