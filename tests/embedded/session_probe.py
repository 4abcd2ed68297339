"""Not collected by a normal run (no test_ prefix): test_embedded_default runs it in a child pytest
to see what a test session leaves running. It asks for the session's database and Redis DB."""

from __future__ import annotations

import redis
import sqlalchemy as sa


def test_the_session_servers_answer(engine: sa.Engine, redis_url: str) -> None:
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT 1")) == 1
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    client.close()
