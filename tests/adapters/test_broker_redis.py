"""The Redis broker transport as the workers use it: every message delivered and acknowledged,
with no Redis client built per message (kombu's own builds two)."""

from __future__ import annotations

import uuid

import pytest
import redis
from kombu import Connection
from redis._parsers import _HiredisParser

from orchestrator.adapters import broker_redis

MESSAGES = 20


@pytest.fixture
def clients_built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many redis.Redis clients this process builds from now on."""
    built = [0]
    init = redis.Redis.__init__

    def counting(self: redis.Redis, *args: object, **kwargs: object) -> None:
        built[0] += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "__init__", counting)
    return built


def test_messages_are_delivered_and_acked_without_a_client_per_message(
    redis_url: str, redis_client: redis.Redis, clients_built: list[int]
) -> None:
    # Given the transport installed (as celeryconfig does) and a queue with messages on it
    broker_redis.install()
    queue = f"test-broker-{uuid.uuid4().hex[:8]}"
    with Connection(redis_url, transport_options={"visibility_timeout": 3600}) as conn:
        assert isinstance(conn.transport, broker_redis.Transport)
        assert conn.as_uri().startswith("redis://")  # what Flower's broker page reads
        with conn.SimpleQueue(queue) as simple:
            for n in range(MESSAGES):
                simple.put({"n": n})
            first = simple.get(timeout=10)  # the channel's clients now exist
            first.ack()
            before = clients_built[0]
            # When a consumer takes and acknowledges the rest, one by one (acks_late-like)
            received = [first.payload["n"]]
            for _ in range(MESSAGES - 1):
                message = simple.get(timeout=10)
                received.append(message.payload["n"])
                message.ack()
            # Then every message arrived once, in order, and none is left unacknowledged
            assert received == list(range(MESSAGES))
            assert redis_client.hlen("unacked") == 0
            # And no Redis client was built for them
            assert clients_built[0] == before


def test_the_workers_redis_replies_are_parsed_in_c(redis_url: str) -> None:
    # Given the transport installed (as celeryconfig does) and a client made as our locks and
    # Celery's result backend make theirs
    broker_redis.install()
    with Connection(redis_url, transport_options={"visibility_timeout": 3600}) as conn:
        clients = [conn.default_channel.client, redis.Redis.from_url(redis_url)]
        # When each takes a connection
        for client in clients:
            connection = client.connection_pool.get_connection()
            try:
                # Then hiredis (a dependency) parses its replies, not redis-py's Python parser
                assert isinstance(connection._parser, _HiredisParser)
            finally:
                client.connection_pool.release(connection)
