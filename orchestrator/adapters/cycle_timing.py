"""The last planned cycle's timing, kept in one Redis hash for the metrics process.

The cycle writes it (services/dispatch.py); `chip-orchestrator metrics` reads it. A Redis error
while writing is only logged: a cycle never fails for want of a metric.
"""

from __future__ import annotations

import logging
import time

import redis

log = logging.getLogger(__name__)

#: Redis hash of the last planned cycle: finished_at (epoch seconds), duration_seconds.
LAST_CYCLE_KEY = "chiporch:cycle:last"


def record(client: redis.Redis, duration_seconds: float) -> None:
    """Remember when the last cycle finished and how long it took; a Redis error only logs."""
    try:
        client.hset(
            LAST_CYCLE_KEY,
            mapping={"finished_at": repr(time.time()), "duration_seconds": repr(duration_seconds)},
        )
    except redis.RedisError as error:
        log.warning("could not record the cycle's timing: %s", type(error).__name__)


def read(client: redis.Redis) -> tuple[float | None, float | None]:
    """(finished_at, duration_seconds) of the last cycle; (None, None) before the first.

    Raises redis.RedisError or ValueError: the metrics count those as a failed read.
    """
    values = {k.decode(): float(v) for k, v in client.hgetall(LAST_CYCLE_KEY).items()}
    return values.get("finished_at"), values.get("duration_seconds")
