"""The planning cache: a measurement kept for a while, and a failing Redis never fails a cycle."""

from __future__ import annotations

import redis

from orchestrator.adapters import planning_cache


def test_a_measurement_is_kept_then_expires(redis_client: redis.Redis) -> None:
    name = "test-keep"
    redis_client.delete(planning_cache.KEY.format(name=name))
    assert planning_cache.get(redis_client, name) is None
    planning_cache.put(redis_client, name, {"history_days": 12, "by_reason": {"banned": 3}})
    assert planning_cache.get(redis_client, name) == {
        "history_days": 12,
        "by_reason": {"banned": 3},
    }
    ttl = redis_client.ttl(planning_cache.KEY.format(name=name))
    assert 0 < ttl <= planning_cache.CACHE_SECONDS
    redis_client.delete(planning_cache.KEY.format(name=name))


def test_an_unreachable_redis_reads_as_a_miss_and_writes_nothing() -> None:
    # Given a Redis nobody listens on
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    # Then a read is a miss and a write only logs: the cycle measures instead
    assert planning_cache.get(down, "x") is None
    planning_cache.put(down, "x", {"history_days": 1})
