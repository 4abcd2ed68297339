"""The Redis result backend as the workers use it: one round trip per result, Celery's rule kept
(a stored SUCCESS is never overwritten), results readable and published as before."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery, states
from celery.app import backends

from orchestrator.adapters import result_redis


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    """A Celery app with a JSON result backend on the tests' Redis DB, the backend installed."""
    result_redis.install()
    app = Celery("test-results", broker=redis_url, backend=redis_url)
    app.conf.update(result_serializer="json", result_accept_content=["json"], result_expires=600)
    yield app
    app.close()


def _commands_on(redis_url: str, key: str, work) -> list[str]:
    """The commands clients sent naming `key` while work() ran (MONITOR; a script's own
    commands left out): what a client paid round trips for."""
    seen: list[str] = []
    monitor_client = redis.Redis.from_url(redis_url)
    ready, done = threading.Event(), threading.Event()

    def watch() -> None:
        with monitor_client.monitor() as monitor:
            ready.set()
            for event in monitor.listen():
                command = event["command"]
                if "stop-" + key in command:
                    break
                if key in command and event.get("client_type") != "lua":
                    seen.append(command.split()[0].upper())
        done.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert ready.wait(10)
    work()
    stopper = redis.Redis.from_url(redis_url)
    stopper.echo("stop-" + key)
    stopper.close()
    assert done.wait(10)
    monitor_client.close()
    return seen


def test_the_scheme_resolves_to_this_backend_and_the_url_is_unchanged(
    app: Celery, redis_url: str
) -> None:
    assert isinstance(app.backend, result_redis.RedisBackend)
    assert app.conf.result_backend == redis_url  # what Flower shows
    assert backends.by_url("rediss://example:6380/0")[0] is result_redis.RedisBackend


def test_a_result_is_stored_and_published_in_one_round_trip(
    app: Celery, redis_url: str, redis_client: redis.Redis
) -> None:
    # Given a subscriber on the task's channel (as AsyncResult.get() listens)
    task_id = str(uuid.uuid4())
    key = app.backend.get_key_for_task(task_id).decode()
    pubsub = redis_client.pubsub()
    pubsub.subscribe(key)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"

    # When the worker stores the task's result (its script already loaded by an earlier one)
    app.backend.store_result(str(uuid.uuid4()), None, states.SUCCESS)
    sent = _commands_on(
        redis_url, key, lambda: app.backend.store_result(task_id, {"status": "replaced"}, "SUCCESS")
    )

    # Then one command reached Redis for it (Celery's own: GET, then MULTI SETEX PUBLISH EXEC)
    assert sent == ["EVALSHA"]
    message = pubsub.get_message(timeout=5)
    assert message["type"] == "message" and b'"replaced"' in message["data"]
    pubsub.close()
    # and the result reads as Celery's: state, value, kept result_expires seconds
    assert app.AsyncResult(task_id).get(timeout=5) == {"status": "replaced"}
    assert 0 < redis_client.ttl(key) <= 600


def test_a_stored_success_is_never_overwritten(app: Celery, redis_client: redis.Redis) -> None:
    # Given a task whose first run succeeded
    task_id = str(uuid.uuid4())
    app.backend.store_result(task_id, {"status": "replaced"}, states.SUCCESS)
    key = app.backend.get_key_for_task(task_id)
    before = redis_client.get(key)

    # When a redelivery of it stores a later state (a retry, a failure)
    app.backend.store_result(task_id, None, states.RETRY)
    app.backend.mark_as_failure(task_id, RuntimeError("late"))

    # Then the success stands, byte for byte
    assert redis_client.get(key) == before
    assert app.AsyncResult(task_id).state == states.SUCCESS


def test_states_before_success_are_replaced(app: Celery) -> None:
    task_id = str(uuid.uuid4())
    app.backend.store_result(task_id, None, states.STARTED)
    assert app.AsyncResult(task_id).state == states.STARTED
    app.backend.store_result(task_id, {"n": 1}, states.SUCCESS)
    assert app.AsyncResult(task_id).get(timeout=5) == {"n": 1}


def test_a_failure_keeps_result_failure_expires(app: Celery, redis_client: redis.Redis) -> None:
    app.conf.result_failure_expires = 60
    backend = app.backend
    task_id = str(uuid.uuid4())
    backend.mark_as_failure(task_id, RuntimeError("boom"))
    assert 0 < redis_client.ttl(backend.get_key_for_task(task_id)) <= 60
    assert app.AsyncResult(task_id).state == states.FAILURE


@pytest.mark.parametrize("stored_state", [states.SUCCESS, states.STARTED])
def test_a_value_the_script_cannot_read_falls_back_to_celerys_own_store(
    redis_url: str, redis_client: redis.Redis, stored_state: str
) -> None:
    # Given a result another writer stored compressed (not JSON to the script)
    result_redis.install()
    other = Celery("other-writer", broker=redis_url, backend=redis_url)
    other.conf.update(result_compression="zlib", result_expires=600)
    task_id = str(uuid.uuid4())
    other.backend.store_result(task_id, {"first": True}, stored_state)
    key = other.backend.get_key_for_task(task_id)
    assert not redis_client.get(key).startswith(b"{")

    # When this process stores a later state for it
    app = Celery("this-writer", broker=redis_url, backend=redis_url)
    app.conf.update(result_expires=600)
    app.backend.store_result(task_id, {"second": True}, states.SUCCESS)

    # Then Celery's own rule decided, as without this backend: a success stays, else replaced
    expected = {"first": True} if stored_state == states.SUCCESS else {"second": True}
    assert app.AsyncResult(task_id).result == expected
    other.close()
    app.close()
