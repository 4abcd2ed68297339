"""Chip locks on a real Redis: who gets in, what a redelivery adopts, and the round trips they cost."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from orchestrator.adapters import locks
from orchestrator.adapters.locks import LockSet


class CountingConnection(redis.Connection):
    """A connection that counts what it sends (one send is one round trip)."""

    sent = 0

    def send_packed_command(self, command: object, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


@pytest.fixture
def counting_client(redis_url: str) -> Iterator[redis.Redis]:
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    client.ping()  # connected, scripts not yet loaded on purpose
    yield client
    client.close()
    pool.disconnect()


def chip() -> str:
    return str(uuid.uuid4())


def test_a_swap_takes_two_locks_and_clears_its_marker_in_three_round_trips(
    counting_client: redis.Redis,
) -> None:
    # Given a chip whose replace task was marked queued, and a ready chip
    old, new = chip(), chip()
    marker = locks.queued_key("orchestrator.replace_chip", old)
    counting_client.set(marker, "1")
    counting_client.script_load(locks._ACQUIRE)  # a warm server: EVALSHA finds its scripts
    counting_client.script_load(locks._RELEASE)
    CountingConnection.sent = 0
    # When a task locks the chip (clearing the marker), claims the ready chip, then lets go
    with LockSet(counting_client, owner="task-1") as held:
        assert held.acquire(old, clear=marker)
        assert held.acquire(new)
        assert counting_client.get(locks.chip_lock_key(old)) == b"task-1"
        inside = CountingConnection.sent - 1  # the GET above
    # Then that took one round trip per lock taken and one for both releases
    assert inside == 2
    assert CountingConnection.sent == 4
    assert counting_client.exists(marker, *map(locks.chip_lock_key, (old, new))) == 0


def test_the_delivery_is_counted_in_the_call_that_takes_the_lock(
    counting_client: redis.Redis,
) -> None:
    # Given a warm server and a chip another task holds
    busy, free = chip(), chip()
    counting_client.script_load(locks._ACQUIRE)
    counting_client.set(locks.chip_lock_key(busy), "task-2")
    counter = locks.delivery_key("task-1", 0)
    with LockSet(counting_client, owner="task-1") as held:
        assert held.deliveries is None  # nothing counted yet
        CountingConnection.sent = 0
        # When task-1 (its first delivery) tries the busy chip, then (redelivered) a free one
        assert not held.acquire(busy, delivery=("task-1", 0))
        assert held.deliveries == 1
        assert held.acquire(free, delivery=("task-1", 0))
        # Then each call counted the delivery in its own single round trip, lock or no lock
        assert CountingConnection.sent == 2
        assert held.deliveries == 2
    assert int(counting_client.get(counter)) == 2
    assert 0 < counting_client.ttl(counter) <= locks.DELIVERY_COUNT_TTL
    # And the count is the one count_delivery keeps for the same message
    assert locks.count_delivery(counting_client, "task-1", 0) == 3


def test_another_task_is_kept_out_and_the_marker_is_cleared_anyway(redis_client) -> None:
    # Given a chip locked by task 1
    target = chip()
    marker = locks.queued_key("orchestrator.replace_chip", target)
    with LockSet(redis_client, owner="task-1") as first:
        assert first.acquire(target)
        redis_client.set(marker, "1")
        # When task 2 tries it (clearing its queued marker on the way)
        with LockSet(redis_client, owner="task-2") as second:
            assert not second.acquire(target, clear=marker)
        # Then task 2 is out, its release left task 1's lock alone, and the marker is gone
        assert redis_client.get(locks.chip_lock_key(target)) == b"task-1"
        assert not redis_client.exists(marker)
    assert not redis_client.exists(locks.chip_lock_key(target))


def test_a_redelivery_adopts_the_lock_its_dead_first_run_left_with_a_fresh_ttl(
    redis_client,
) -> None:
    # Given a lock left behind by a run of task-1 that died, 5 s from expiring
    target = chip()
    key = locks.chip_lock_key(target)
    redis_client.set(key, "task-1", px=5_000)
    # When the same message is delivered again
    with LockSet(redis_client, owner="task-1", ttl=120) as held:
        # Then it takes the lock over, with the full TTL again
        assert held.acquire(target)
        assert redis_client.pttl(key) > 100_000
    assert not redis_client.exists(key)


def test_without_an_owner_each_lockset_is_its_own_holder(redis_client) -> None:
    # Given a chip locked by a LockSet without an owner
    target = chip()
    with LockSet(redis_client) as first:
        assert first.acquire(target)
        # Then another ownerless LockSet does not get it
        with LockSet(redis_client) as second:
            assert not second.acquire(target)
        assert redis_client.exists(locks.chip_lock_key(target))


def test_a_lock_that_expired_and_was_taken_is_not_released_by_its_old_holder(
    redis_client,
) -> None:
    # Given task 1's lock, which expired and task 2 then took
    target = chip()
    key = locks.chip_lock_key(target)
    first = LockSet(redis_client, owner="task-1")
    assert first.acquire(target)
    redis_client.set(key, "task-2")
    # When task 1 releases what it thinks it holds
    first.release_all()
    # Then task 2 keeps its lock
    assert redis_client.get(key) == b"task-2"
