"""Engines, one per process, and the translation of database errors at the boundary."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator

import sqlalchemy as sa
from psycopg import errors
from sqlalchemy import exc

from orchestrator.errors import Rejected, TransientError

#: Constraint name -> what it means for an operator, shown instead of a raw IntegrityError.
CONSTRAINT_MESSAGES = {
    "pool_config_sizes_not_negative": "pool_config: sizes, days and minutes must not be negative",
    "pool_config_producao_min_le_max": "pool_config: producao_min must not exceed producao_max",
    "pool_config_trust_in_range": "pool_config: trust thresholds must be between 0 and 100",
    "pool_config_storm_fraction_in_range": "pool_config: replace_storm_fraction must be in (0, 1]",
    "pool_config_ddd_valid": "pool_config: default_ddd must be a Brazilian area code (11..99)",
    "pool_config_flap_max_not_negative": "pool_config: flap_max_per_hour must not be negative",
    "pool_config_monthly_cost_not_negative": (
        "pool_config: number_monthly_cost must not be negative (NULL: unknown)"
    ),
    "pool_config_service_level_in_range": (
        "pool_config: service_level must be between 0 and 1, exclusive"
    ),
    "pool_config_max_purchases_per_day_not_negative": (
        "pool_config: max_purchases_per_day must not be negative (NULL: no cap)"
    ),
    "pool_config_rehab_after_not_negative": (
        "pool_config: rehab_after_minutes must not be negative (NULL: never)"
    ),
    "chips_status_known": "chips: unknown status",
    "chips_trust_score_in_range": "chips: trust_score must be between 0 and 100",
    "chips_telefone_key": "chips: this telefone is already in the pool",
    # An adopted pool_config (id serial) keeps one row with a unique index on a constant.
    "pool_config_one_row": "pool_config: there is exactly one row; update it instead",
}


#: How long a statement waits for a row or table lock before giving up (a retry, not a hang).
LOCK_TIMEOUT_MS = 5_000
#: Longest statement. Both stay below the smallest task soft_time_limit (20 s, tasks/chips.py),
#: so a stuck wait ends as TransientError (retried) instead of the task being killed; a use
#: case waits on at most three locks in a row (config, chip, conversations): 3 x 5 s < 20 s.
STATEMENT_TIMEOUT_MS = 15_000


#: A connection back in the pool longer than this is pinged before use (a PostgreSQL restart in
#: between is then noticed before the task's statements). One used again sooner is not: under
#: load that ping was one round trip per transaction for nothing; a connection that died within
#: this window fails its task's first statement, which is retried (TransientError), and the
#: pool drops every connection opened before the failure.
PING_AFTER_IDLE_SECONDS = 2.0


def create_engine(
    url: str,
    *,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS,
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    ping_after_idle_seconds: float = PING_AFTER_IDLE_SECONDS,
    **kwargs: object,
) -> sa.Engine:
    """An engine with a small pool, lock/statement caps, and a ping before reusing a connection
    idle longer than ping_after_idle_seconds (survives a PostgreSQL restart)."""
    timeouts = f"-c lock_timeout={lock_timeout_ms} -c statement_timeout={statement_timeout_ms}"
    options: dict[str, object] = {
        "pool_size": 5,
        "max_overflow": 5,
        "pool_recycle": 1800,
        "connect_args": {"connect_timeout": 5, "options": timeouts},
    }
    options.update(kwargs)
    engine = sa.create_engine(url, **options)
    if not options.get("pool_pre_ping"):
        _ping_when_idle(engine, ping_after_idle_seconds)
    return engine


def _ping_when_idle(engine: sa.Engine, idle_seconds: float) -> None:
    """Pre-ping only connections that sat in the pool longer than idle_seconds."""

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: object, record: object) -> None:
        record.info["checked_in_at"] = time.monotonic()  # type: ignore[attr-defined]

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: object, record: object, _proxy: object) -> None:
        since = record.info.get("checked_in_at")  # type: ignore[attr-defined]
        if since is None or time.monotonic() - since <= idle_seconds:
            return  # just opened, or busy: no round trip
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception:
            alive = False
        if not alive:  # the pool discards it and checks out (or opens) another
            raise sa.exc.DisconnectionError("connection idle in the pool did not answer a ping")


def describe_integrity_error(error: exc.IntegrityError) -> str:
    """A readable one-line explanation of a constraint violation."""
    diag = getattr(error.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name in CONSTRAINT_MESSAGES:
        return CONSTRAINT_MESSAGES[name]
    detail = getattr(diag, "message_primary", None) or str(error.orig).splitlines()[0]
    return re.sub(r"\s+", " ", f"{name or 'constraint'}: {detail}").strip()


def _transient(error: exc.DBAPIError) -> TransientError | None:
    """The retryable reading of a database error, or None when it is a bug to surface."""
    if isinstance(error.orig, errors.LockNotAvailable):
        return TransientError("database lock wait timed out (lock_timeout): another task holds it")
    if isinstance(error.orig, errors.QueryCanceled):
        return TransientError("database statement timed out or was cancelled")
    if isinstance(error, (exc.OperationalError, exc.InterfaceError)):
        return TransientError(f"database unavailable: {type(error.orig).__name__}")
    if error.connection_invalidated:
        return TransientError("database connection lost")
    return None


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Constraint violations become Rejected; timeouts, lost connections TransientError."""
    try:
        yield
    except exc.IntegrityError as error:
        raise Rejected(describe_integrity_error(error), code="constraint") from None
    except exc.DBAPIError as error:
        transient = _transient(error)
        if transient is None:
            raise
        raise transient from None


@contextlib.contextmanager
def transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One transaction, its database errors translated (translated_errors)."""
    with translated_errors(), engine.begin() as conn:
        yield conn
