"""Running an adoption plan without stopping the other services' writers for more than moments.

Order: preflight (reads; a blocking row stops everything here) -> one short locked transaction
(columns with constant defaults, constraints NOT VALID, the trigger: catalog changes only) ->
online statements (CREATE INDEX CONCURRENTLY, VALIDATE CONSTRAINT: writers continue) -> a second
short locked transaction (UNIQUE USING INDEX, SET NOT NULL proven by a validated CHECK).
A locked transaction waits at most lock_timeout for its locks, then lets the queued writers
through and tries again later. A row written between the preflight and the locked transaction
that breaks a constraint fails a later step: everything this run did is then taken back in one
locked transaction and migrate stops naming the row, as if the preflight had found it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from psycopg import errors as pg_errors

from orchestrator.errors import TransientError
from orchestrator.store.adoption import assess as adoption
from orchestrator.store.adoption.assess import AdoptionBlocked
from orchestrator.store.adoption.model import FINAL, LOCKED, ONLINE, Plan, Step

#: The order the short transactions lock the shared tables in: a table with a foreign key before
#: the table it references, as another service's INSERT takes them (its RowExclusiveLock, then the
#: key check's RowShareLock on chips), so the usual write and migrate never wait on each other in
#: a cycle.
LOCK_ORDER = ("pool_config", "conversation_chips", "orchestrator_operations", "chips")
#: lock_timeout, capped below the server's deadlock_timeout: in a lock cycle with another
#: service's transaction migrate gives up first (and retries), never the other service.
SET_LOCK_TIMEOUT = """
SELECT set_config('lock_timeout', LEAST(CAST(:ms AS int),
       (SELECT setting::int * 4 / 5 FROM pg_settings WHERE name = 'deadlock_timeout'))::text, :local)
"""
#: Lost a lock wait (timeout, or chosen as a deadlock's victim): roll back and try again later.
RETRYABLE = (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected)


@dataclass(frozen=True)
class Event:
    """Progress: preflight, holding (a table locked), locked (all of them), before and after a
    step, retry, undone."""

    kind: str
    what: str
    seconds: float = 0.0


@dataclass(frozen=True)
class Options:
    """How long a short locked transaction may queue, how often to retry, the online waits."""

    lock_timeout_ms: int = 500
    attempts: int = 20
    online_lock_timeout_ms: int = 300_000
    progress: Callable[[Event], None] | None = None

    def emit(self, kind: str, what: str, seconds: float = 0.0) -> None:
        """Report progress to the callback, if any (the CLI prints it; tests pause on it)."""
        if self.progress is not None:
            self.progress(Event(kind, what, seconds))


class AdoptionLockTimeout(TransientError):
    """Raised when a short locked transaction never got its locks (a long transaction holds them)."""


def adopt(engine: sa.Engine, options: Options) -> Plan:
    """Preflight, then the plan's phases; AdoptionBlocked (nothing changed) if rows block it."""
    started = time.perf_counter()
    the_plan, blockers = _assess(engine)
    options.emit("preflight", f"{len(the_plan.checks)} row checks", time.perf_counter() - started)
    if the_plan.problems or blockers:
        raise AdoptionBlocked(the_plan.problems, blockers)
    done: list[Step] = []
    try:
        _locked(engine, the_plan.phase(LOCKED), options, done)
        _online(engine, the_plan.phase(ONLINE), options, done)
        _locked(engine, the_plan.phase(FINAL), options, done)
    except Exception as error:
        undone = _undo(engine, done, options)
        if isinstance(error, sa.exc.IntegrityError):
            # A row written after the preflight breaks a constraint: report it like the preflight.
            the_plan, blockers = _assess(engine)
            note = (
                "a row written while migrate ran broke it; everything this run added was removed"
                if undone
                else "a row written while migrate ran broke it; taking this run's changes back"
                " failed too, so fix the rows and run migrate again (it resumes)"
            )
            raise AdoptionBlocked(the_plan.problems, blockers, note) from error
        if isinstance(error, AdoptionLockTimeout):
            tail = (
                "nothing was changed"
                if undone
                else "what this run added stays (harmless) and the next run finishes it"
            )
            raise AdoptionLockTimeout(f"{error}; {tail}") from None
        raise
    return the_plan


def _assess(engine: sa.Engine) -> tuple[Plan, list[adoption.Blocker]]:
    """Plan and blockers from one snapshot (REPEATABLE READ, read only)."""
    with adoption.snapshot(engine) as conn:
        return adoption.assess(conn)


def _tables(steps: Sequence[Step]) -> list[str]:
    touched = {s.table for s in steps}
    if touched & {"conversation_chips", "orchestrator_operations"}:
        touched.add("chips")  # their foreign keys lock chips too
    return [t for t in LOCK_ORDER if t in touched]


def _locked(engine: sa.Engine, steps: Sequence[Step], options: Options, done: list[Step]) -> None:
    """One transaction: lock the tables (waiting at most lock_timeout), run steps, commit."""
    if not steps:
        return
    run_in_lock(engine, _tables(steps), [s.sql for s in steps], options, steps[0].phase)
    done.extend(steps)


def run_in_lock(
    engine: sa.Engine,
    tables: Sequence[str],
    statements: Sequence[str],
    options: Options,
    label: str,
) -> None:
    """Run statements in one transaction holding ACCESS EXCLUSIVE on tables; retried on lock timeout."""
    for attempt in range(options.attempts):
        try:
            with engine.connect() as conn, conn.begin():
                set_lock_timeout(conn, options.lock_timeout_ms, local=True)
                for table in tables:
                    if _exists(conn, table):
                        conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                        options.emit("holding", table)
                held = time.perf_counter()
                options.emit("locked", label)
                for sql in statements:
                    conn.exec_driver_sql(sql)
            options.emit(
                "after",
                f"{label} transaction ({len(statements)} statements)",
                time.perf_counter() - held,
            )
            return
        except sa.exc.OperationalError as error:
            if not isinstance(error.orig, RETRYABLE):
                raise
            options.emit("retry", f"{label}: lock not granted within {options.lock_timeout_ms} ms")
            time.sleep(min(5.0, 0.25 * 2**attempt) + random.uniform(0, 0.25))
    raise AdoptionLockTimeout(
        f"migrate gave up: could not lock {', '.join(tables)} within {options.lock_timeout_ms} ms"
        f" in {options.attempts} attempts; {lock_holders(engine, tables)}"
    )


def set_lock_timeout(conn: sa.Connection, ms: int, *, local: bool) -> None:
    """lock_timeout = ms, at most 80% of deadlock_timeout (for the transaction when local)."""
    conn.execute(sa.text(SET_LOCK_TIMEOUT), {"ms": int(ms), "local": local})


def _exists(conn: sa.Connection, table: str) -> bool:
    return conn.exec_driver_sql(f"SELECT to_regclass('{table}') IS NOT NULL").scalar_one()


def lock_holders(engine: sa.Engine, tables: Sequence[str]) -> str:
    """Who holds locks on tables now (pid, state, transaction age, query), for the message."""
    sql = """
        SELECT DISTINCT a.pid, a.state, date_trunc('second', now() - a.xact_start),
               left(regexp_replace(a.query, '\\s+', ' ', 'g'), 60)
        FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
        JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE c.relname = ANY(:tables) AND l.granted AND a.pid <> pg_backend_pid()
        ORDER BY 3 DESC NULLS LAST LIMIT 3"""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), {"tables": list(tables)}).all()
    if not rows:
        return "nothing holds them any more"
    return "held by " + "; ".join(
        f"pid {p} ({s}, transaction open {age}): {q}" for p, s, age, q in rows
    )


def _online(engine: sa.Engine, steps: Sequence[Step], options: Options, done: list[Step]) -> None:
    """One statement at a time in autocommit (CONCURRENTLY needs it); writers are not blocked."""
    if not steps:
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"SET lock_timeout = {int(options.online_lock_timeout_ms)}")
        for step in steps:
            options.emit("before", step.what)
            done.append(step)  # before: a failed CONCURRENTLY build leaves an index to drop
            started = time.perf_counter()
            try:
                conn.exec_driver_sql(step.sql)
            except sa.exc.OperationalError as error:
                if not isinstance(error.orig, pg_errors.LockNotAvailable):
                    raise
                raise AdoptionLockTimeout(
                    f"migrate gave up: {step.what} waited {options.online_lock_timeout_ms} ms for"
                    f" a lock; {lock_holders(engine, [step.table])}"
                ) from None
            options.emit("after", step.what, time.perf_counter() - started)


def _undo(engine: sa.Engine, done: Sequence[Step], options: Options) -> bool:
    """Take back what this run did, in one locked transaction; False if that failed too."""
    statements = [s.undo for s in reversed(done) if s.undo]
    if not statements:
        return True
    try:
        run_in_lock(engine, _tables(done), statements, options, "undo")
    except Exception:  # the original error matters more; the next run resumes from the catalog
        return False
    options.emit("undone", f"{len(statements)} changes taken back")
    return True
