"""Forcing interleavings on PostgreSQL: who waits on a lock, and waiting until they do.

Race tests park competitors on a lock the test holds, check that every one of them is parked
(`waiting_backends`), then release it; nothing depends on timing. The soak and the purchase
benchmark use the same helpers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from orchestrator.adapters import locks

T = TypeVar("T")


def waiting_backends(engine: sa.Engine) -> int:
    """Sessions of this database waiting for a lock (row, table or advisory)."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 20,
    what: str = "condition not met in time",
    *,
    every: float = 0.02,
) -> T:
    """Poll predicate every `every` seconds until it returns something truthy, and return that.

    AssertionError(what) if it is still falsy after timeout.
    """
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(every)
    return value


def wait_for(predicate: Callable[[], T], timeout: float = 30, every: float = 0.05) -> T:
    """wait_until for processes (workers, beat, metrics): a longer timeout, a calmer poll."""
    return wait_until(predicate, timeout, f"condition not met within {timeout} s", every=every)


def kill_cycle_guard_holder(engine: sa.Engine) -> None:
    """Terminate the session holding the cycle guard, if any (as if its worker died).

    Code from before the cycle guard (a benchmark's "before" run) has no key: nothing to do.
    """
    key = getattr(locks, "CYCLE_GUARD_KEY", None)
    if key is None:
        return
    with engine.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = 0 AND objid = :key AND objsubid = 1 AND granted"
            ),
            {"key": key},
        )
        conn.commit()
