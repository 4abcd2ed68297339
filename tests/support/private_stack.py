"""A broker of a test module's own, so its workers never share one with other modules or runs.

Redis (the default): a free Redis DB number, claimed with SET NX. RabbitMQ, with
CHIPORCH_TEST_BROKER=amqp: a RabbitMQ vhost created for that Redis DB (results and locks stay in
Redis, as in production) and deleted with it. `broker_url_for(redis_url)` gives the broker that
goes with a Redis DB; worker_env(), celery_client_for() and the CLI tests use it, so a module
that overrides `redis_url` (a Slack token, a short Salvy timeout) gets a private vhost too.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Iterator

import redis
from celery import Celery
from kombu import Connection

from tests.support import servers

CLAIM_KEY = "chiporch:test-claim"
#: "redis" (default) or "amqp": the broker the worker tests run on.
TEST_BROKER_VARIABLE = "CHIPORCH_TEST_BROKER"
#: RabbitMQ without a vhost; each module gets a vhost of its own under it.
AMQP_BASE_VARIABLE = "CHIPORCH_TEST_AMQP_URL"
AMQP_BASE_DEFAULT = "amqp://guest:guest@127.0.0.1:5672"

#: Vhost URL by the Redis DB URL it goes with (created on first use, deleted on release).
_vhosts: dict[str, str] = {}


def base_redis_url() -> str:
    """REDIS_URL, or the embedded Redis under .data/ (as tests/conftest.py resolves it)."""
    return servers.base_redis_url()


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
                release_broker(f"{base}/{number}")
                client.flushdb()
            return
        finally:
            client.close()
    raise RuntimeError("no free Redis DB number (1..15) for a private broker")


def broker_under_test() -> str:
    """The broker the worker tests run on: CHIPORCH_TEST_BROKER, "redis" unless "amqp"."""
    kind = os.environ.get(TEST_BROKER_VARIABLE, "redis").strip().lower() or "redis"
    if kind not in ("redis", "amqp"):
        raise RuntimeError(f"{TEST_BROKER_VARIABLE} must be redis or amqp, not {kind!r}")
    return kind


def rabbitmqctl(*args: str) -> str:
    """Run `rabbitmqctl ARGS` against the machine's RabbitMQ; its output, or a clear error."""
    command = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"  # sbin: maybe not on PATH
    out = subprocess.run([command, *args], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {out.stderr or out.stdout}")
    return out.stdout


def create_vhost() -> str:
    """A new RabbitMQ vhost that guest may use; its amqp:// URL."""
    name = f"chiporch-test-{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    base = os.environ.get(AMQP_BASE_VARIABLE) or AMQP_BASE_DEFAULT
    return f"{base.rstrip('/')}/{name}"


def delete_vhost(url: str) -> None:
    """Delete the vhost of an amqp:// URL made by create_vhost (its queues and messages too)."""
    rabbitmqctl("delete_vhost", url.rsplit("/", 1)[1])


def broker_url_for(redis_url: str) -> str:
    """The broker that goes with this Redis DB: itself, or (amqp) a private vhost of its own."""
    if broker_under_test() == "redis":
        return redis_url
    if redis_url not in _vhosts:
        _vhosts[redis_url] = create_vhost()
    return _vhosts[redis_url]


def release_broker(redis_url: str) -> None:
    """Delete the vhost that went with this Redis DB, if one was made."""
    url = _vhosts.pop(redis_url, None)
    if url is not None:
        delete_vhost(url)


@atexit.register
def _release_every_broker() -> None:
    """Vhosts of the session's Redis DB (never released by a fixture) go when pytest exits."""
    for redis_url in list(_vhosts):
        with contextlib.suppress(Exception):
            release_broker(redis_url)


def queue_depths(broker_url: str, queues: Iterable[str]) -> dict[str, int]:
    """Messages ready in each queue (not those a worker holds), on Redis or RabbitMQ alike."""
    depths = {}
    with Connection(broker_url, connect_timeout=5) as conn:
        for queue in queues:
            channel = conn.channel()
            try:
                depths[queue] = channel.queue_declare(queue, passive=True).message_count
            except conn.channel_errors:  # not declared yet (NOT_FOUND; it closes the channel)
                depths[queue] = 0
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return depths


def purge_queues(broker_url: str, queues: Iterable[str]) -> None:
    """Drop every ready message of these queues (declaring them if missing)."""
    with Connection(broker_url, connect_timeout=5) as conn:
        channel = conn.channel()
        for queue in queues:
            channel.queue_declare(queue, durable=True, auto_delete=False)
            channel.queue_purge(queue)
        channel.close()


def celery_client_for(redis_url: str) -> Celery:
    """A plain client, as another service has: the broker URL, and Redis for results."""
    app = Celery("test-client", broker=broker_url_for(redis_url), backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
    return app
