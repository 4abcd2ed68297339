"""The measured history the cycle sizes the pool from (auto_size), kept in Redis for a while.

The measurement reads the operations of the whole forecast window; demand moves over days, so
the cycle measures at most once per CACHE_SECONDS and every worker shares the result. A Redis
error only logs and the cycle measures again: sizing never fails a cycle for want of a cache.
"""

from __future__ import annotations

import json
import logging

import redis

log = logging.getLogger(__name__)

#: Redis key of a cached measurement (JSON); name says what was measured (window, warm-up).
KEY = "chiporch:planning:history:{name}"
#: How long one measurement is used, in seconds.
CACHE_SECONDS = 600


def get(client: redis.Redis, name: str) -> dict | None:
    """The cached measurement of this name, or None (absent, expired, or Redis failing)."""
    try:
        raw = client.get(KEY.format(name=name))
    except redis.RedisError as error:
        log.warning("planning cache unreadable: %s", type(error).__name__)
        return None
    return None if raw is None else json.loads(raw)


def put(client: redis.Redis, name: str, value: dict, ttl: int = CACHE_SECONDS) -> None:
    """Keep a measurement for ttl seconds; a Redis error only logs."""
    try:
        client.set(KEY.format(name=name), json.dumps(value), ex=ttl)
    except redis.RedisError as error:
        log.warning("planning cache not written: %s", type(error).__name__)
