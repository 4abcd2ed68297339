"""A Redis DB number of a test module's own, so its workers never share a broker with others.

tests/worker/conftest.py starts one session worker on the session's Redis DB. A module that needs
workers with other settings (a Slack token, a short Salvy timeout) overrides `redis_url`,
`celery_client` and `worker` at module scope; its workers then listen on a broker nobody else
uses, and conftest's autouse fixtures (fresh keys, quiet workers) follow the override.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import redis
from celery import Celery

from orchestrator import embedded
from orchestrator.settings import Settings

CLAIM_KEY = "chiporch:test-claim"


def base_redis_url() -> str:
    """REDIS_URL, or the embedded Redis under .data/ (as tests/conftest.py resolves it)."""
    settings = Settings.from_env()
    return settings.redis_url or embedded.redis_url(settings.data_dir)


@contextlib.contextmanager
def claim_redis_db(base_url: str) -> Iterator[str]:
    """A free Redis DB number (empty, claimed with SET NX as conftest does), flushed at the end."""
    base = base_url.rsplit("/", 1)[0]
    token = uuid.uuid4().hex
    for number in range(15, 0, -1):
        client = redis.Redis.from_url(f"{base}/{number}")
        try:
            claimed = client.dbsize() == 0 and client.set(CLAIM_KEY, token, nx=True, ex=7200)
            if not claimed:
                continue
            try:
                yield f"{base}/{number}"
            finally:
                client.flushdb()
            return
        finally:
            client.close()
    raise RuntimeError("no free Redis DB number (1..15) for a private broker")


def celery_client_for(url: str) -> Celery:
    """A plain client, as another service has: only the broker (and results) URL."""
    app = Celery("test-client", broker=url, backend=url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
    return app
