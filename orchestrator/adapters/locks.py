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
from collections.abc import Iterator
from types import TracebackType

import redis
import sqlalchemy as sa
from redis.exceptions import LockError, LockNotOwnedError
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
    except (LockError, LockNotOwnedError):
        raise
    except _RedisError as error:
        raise TransientError(f"redis unavailable: {type(error).__name__}") from None


class LockSet:
    """Non-blocking chip locks held together and released together (a context manager).

    With an owner (the Celery task id), the lock's token is the owner: a redelivery of the same
    message after its worker died (acks_late) takes over the lock its dead first run left
    behind, instead of being skipped until the TTL runs out. Other tasks are still kept out.
    """

    def __init__(
        self, client: redis.Redis, ttl: int = CHIP_LOCK_TTL, owner: str | None = None
    ) -> None:
        self._client, self._ttl, self._owner = client, ttl, owner
        self._held: list[redis.lock.Lock] = []

    def acquire(self, chip_id: str) -> bool:
        """Take the chip's lock if free (or already ours); False if another task holds it."""
        lock = self._client.lock(f"{PREFIX}:lock:chip:{chip_id}", timeout=self._ttl)
        if _redis_call(lock.acquire, blocking=False, token=self._owner) or self._adopt(lock):
            self._held.append(lock)
            return True
        return False

    def _adopt(self, lock: redis.lock.Lock) -> bool:
        """Take over a lock whose token is our owner id (left by our own earlier delivery)."""
        if self._owner is None:
            return False
        token = self._owner.encode()
        if _redis_call(self._client.get, lock.name) != token:
            return False
        lock.local.token = token
        try:
            return bool(_redis_call(lock.reacquire))
        except LockError:
            return False

    def release_all(self) -> None:
        """Release what we hold; an expired or lost lock is only logged."""
        while self._held:
            lock = self._held.pop()
            try:
                lock.release()
            except (LockError, _RedisError) as error:
                log.warning("lock %s not released: %s", lock.name, type(error).__name__)

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
    return bool(_redis_call(client.set, f"{PREFIX}:queued:{task}:{chip_id}", "1", nx=True, ex=ttl))


def clear_queued(client: redis.Redis, task: str, chip_id: str) -> None:
    """The queued task started: the next cycle may queue the chip again if still needed."""
    _redis_call(client.delete, f"{PREFIX}:queued:{task}:{chip_id}")


def count_delivery(client: redis.Redis, task_id: str, retries: int) -> int | None:
    """Count one more delivery of this message (task id, retry); None if Redis does not answer.

    A message whose worker dies on it every time comes back forever (acks_late): past a few
    deliveries the task base class stops it. Redis down only means the task runs uncounted;
    the database keeps it safe.
    """
    key = f"{PREFIX}:deliveries:{task_id}:{retries}"
    try:  # one round trip for both
        count, _ = (
            client.pipeline(transaction=False).incr(key).expire(key, DELIVERY_COUNT_TTL).execute()
        )
    except Exception:  # any failure here must not stop the task
        return None
    return int(count)
