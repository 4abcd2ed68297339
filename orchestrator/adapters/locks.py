"""Locks: a Redis lock per chip, a "task queued" marker, delivery counts, and the cycle guard.

The Redis ones save work (two workers never start on the same chip); they do not keep the data
right. That is the database's job (compare-and-set), so a lock lost to a Redis restart or an
expired TTL costs at most a wasted attempt, never a double promotion.

The cycle guard is a PostgreSQL session advisory lock held on a connection of its own while
one cycle runs: a second cycle at that moment answers `skipped`, one right after plans. It
dies with its connection, so a worker killed mid-cycle never leaves it behind. It only saves
work too: overlapping cycles never buy more than the deficit, because the purchase itself is
serialised (services/cycle_purchases.py).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from types import TracebackType

import redis
import sqlalchemy as sa
from redis.exceptions import RedisError as _RedisError

from orchestrator.errors import TransientError
from orchestrator.lock_keys import AdvisoryLock

log = logging.getLogger(__name__)

#: Key prefix of everything this module writes.
PREFIX = "chiporch"
#: Lock TTL: longer than the longest task's hard time limit, so a live task never loses it.
CHIP_LOCK_TTL = 120
#: pg_advisory_lock key of the cycle guard (every key: orchestrator/lock_keys.py).
CYCLE_GUARD_KEY = int(AdvisoryLock.CYCLE_GUARD)
#: How long a message's delivery count is kept (poison-message detection).
DELIVERY_COUNT_TTL = 24 * 3600


def _redis_call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except _RedisError as error:
        raise TransientError(f"redis unavailable: {type(error).__name__}") from None


#: Take a chip lock in one round trip: free -> ours (SET NX PX); already ours (the same token,
#: left by our own earlier delivery) -> ours again with a fresh TTL; else 0. KEYS[2], when not
#: empty, is a marker deleted first (the chip's "task queued" marker); KEYS[3], when not empty,
#: a delivery counter incremented (kept ARGV[3] seconds). Returns {taken, deliveries or 0}.
_ACQUIRE = """
local deliveries = 0
if KEYS[3] ~= '' then
    deliveries = redis.call('incr', KEYS[3])
    redis.call('expire', KEYS[3], ARGV[3])
end
if KEYS[2] ~= '' then redis.call('del', KEYS[2]) end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, deliveries} end
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('pexpire', KEYS[1], ARGV[2])
    return {1, deliveries}
end
return {0, deliveries}
"""
#: Release every lock still holding our token, in one round trip; how many were released.
_RELEASE = """
local released = 0
for _, key in ipairs(KEYS) do
    if redis.call('get', key) == ARGV[1] then
        redis.call('del', key)
        released = released + 1
    end
end
return released
"""


def chip_lock_key(chip_id: str) -> str:
    """The Redis key of a chip's lock."""
    return f"{PREFIX}:lock:chip:{chip_id}"


class LockSet:
    """Non-blocking chip locks held together and released together (a context manager).

    Each lock is a key holding our token, with a TTL. With an owner (the Celery task id), the
    token is the owner: a redelivery of the same message after its worker died (acks_late) takes
    over the lock its dead first run left behind, instead of being skipped until the TTL runs
    out. Other tasks are still kept out. Taking a lock is one round trip, releasing them all one.
    """

    def __init__(
        self, client: redis.Redis, ttl: int = CHIP_LOCK_TTL, owner: str | None = None
    ) -> None:
        self._client, self._ttl = client, ttl
        self._token = owner or uuid.uuid4().hex
        self._held: list[str] = []
        #: Deliveries of the message counted by acquire(delivery=...), else None.
        self.deliveries: int | None = None

    def acquire(
        self, chip_id: str, *, clear: str | None = None, delivery: tuple[str, int] | None = None
    ) -> bool:
        """Take the chip's lock if free (or already ours); False if another task holds it.

        clear: a key deleted in the same round trip, whatever the answer (a queued marker).
        delivery: (task id, retries) of the message being run, counted in the same round trip
        (count_delivery's counter); the count is then in self.deliveries.
        """
        key = chip_lock_key(chip_id)
        counter = "" if delivery is None else delivery_key(*delivery)
        script = self._client.register_script(_ACQUIRE)
        args = [self._token, self._ttl * 1000, DELIVERY_COUNT_TTL]
        taken, deliveries = _redis_call(script, keys=[key, clear or "", counter], args=args)
        if delivery is not None:
            self.deliveries = int(deliveries)
        if taken:
            self._held.append(key)
            return True
        return False

    def release_all(self) -> None:
        """Release what we hold; an expired or lost lock is only logged."""
        if not self._held:
            return
        held, self._held = self._held, []
        try:
            released = self._client.register_script(_RELEASE)(keys=held, args=[self._token])
        except _RedisError as error:
            log.warning("locks %s not released: %s", held, type(error).__name__)
            return
        if released != len(held):
            log.warning("%d of locks %s had expired or were taken", len(held) - released, held)

    def __enter__(self) -> LockSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release_all()


@contextlib.contextmanager
def cycle_guard(engine: sa.Engine) -> Iterator[bool]:
    """Hold the cycle guard for the block: yields True if taken, False if a cycle is running."""
    try:
        conn = engine.connect()
    except sa.exc.DBAPIError as error:
        raise TransientError(f"database unavailable: {type(error.orig).__name__}") from None
    held = False
    try:
        try:
            held = bool(conn.scalar(sa.select(sa.func.pg_try_advisory_lock(CYCLE_GUARD_KEY))))
            conn.commit()  # the session lock outlives the transaction: no transaction stays open
        except sa.exc.DBAPIError as error:
            raise TransientError(f"database unavailable: {type(error.orig).__name__}") from None
        yield held
    finally:
        if held:
            _release_guard(conn)
        conn.close()


def _release_guard(conn: sa.Connection) -> None:
    """Unlock; if that fails, drop the connection (its session, and so the lock, end with it)."""
    try:
        conn.scalar(sa.select(sa.func.pg_advisory_unlock(CYCLE_GUARD_KEY)))
        conn.commit()
    except Exception as error:  # never return a connection that may still hold the guard
        log.warning(
            "cycle guard not released cleanly (%s); dropping its connection", type(error).__name__
        )
        conn.invalidate()


def mark_queued(client: redis.Redis, task: str, chip_id: str, ttl: int) -> bool:
    """Remember that a task for this chip is queued; False if one already is."""
    return bool(_redis_call(client.set, queued_key(task, chip_id), "1", nx=True, ex=ttl))


def queued_key(task: str, chip_id: str) -> str:
    """The key of the marker saying a task for this chip is queued."""
    return f"{PREFIX}:queued:{task}:{chip_id}"


def clear_queued(client: redis.Redis, task: str, chip_id: str) -> None:
    """The queued task started: the next cycle may queue the chip again if still needed."""
    _redis_call(client.delete, queued_key(task, chip_id))


def delivery_key(task_id: str, retries: int) -> str:
    """The Redis key counting deliveries of one message (task id, retry number)."""
    return f"{PREFIX}:deliveries:{task_id}:{retries}"


def count_delivery(client: redis.Redis, task_id: str, retries: int) -> int | None:
    """Count one more delivery of this message (task id, retry); None if Redis does not answer.

    A message whose worker dies on it every time comes back forever (acks_late): past a few
    deliveries the task base class stops it. Redis down only means the task runs uncounted;
    the database keeps it safe.
    """
    key = delivery_key(task_id, retries)
    try:  # one round trip for both
        count, _ = (
            client.pipeline(transaction=False).incr(key).expire(key, DELIVERY_COUNT_TTL).execute()
        )
    except Exception:  # any failure here must not stop the task
        return None
    return int(count)
