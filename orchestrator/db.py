"""Engines, one per process, and the translation of database errors at the boundary."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy import exc

from orchestrator.errors import Rejected, TransientError

#: Constraint name -> what it means for an operator, shown instead of a raw IntegrityError.
CONSTRAINT_MESSAGES = {
    "pool_config_sizes_not_negative": "pool_config: sizes, days and minutes must not be negative",
    "pool_config_producao_min_le_max": "pool_config: producao_min must not exceed producao_max",
    "pool_config_trust_in_range": "pool_config: trust thresholds must be between 0 and 100",
    "pool_config_storm_fraction_in_range": "pool_config: replace_storm_fraction must be in (0, 1]",
    "pool_config_ddd_valid": "pool_config: default_ddd must be a Brazilian area code (11..99)",
    "chips_status_known": "chips: unknown status",
    "chips_trust_score_in_range": "chips: trust_score must be between 0 and 100",
    "chips_telefone_key": "chips: this telefone is already in the pool",
}


def create_engine(url: str, **kwargs: object) -> sa.Engine:
    """An engine with a small pool, pre-ping (survives a PostgreSQL restart) and a statement cap."""
    options: dict[str, object] = {
        "pool_size": 5,
        "max_overflow": 5,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        "connect_args": {"connect_timeout": 5, "options": "-c statement_timeout=30000"},
    }
    options.update(kwargs)
    return sa.create_engine(url, **options)


def describe_integrity_error(error: exc.IntegrityError) -> str:
    """A readable one-line explanation of a constraint violation."""
    diag = getattr(error.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name in CONSTRAINT_MESSAGES:
        return CONSTRAINT_MESSAGES[name]
    detail = getattr(diag, "message_primary", None) or str(error.orig).splitlines()[0]
    return re.sub(r"\s+", " ", f"{name or 'constraint'}: {detail}").strip()


@contextlib.contextmanager
def transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One transaction; constraint violations become Rejected, lost connections TransientError."""
    try:
        with engine.begin() as conn:
            yield conn
    except exc.IntegrityError as error:
        raise Rejected(describe_integrity_error(error), code="constraint") from None
    except (exc.OperationalError, exc.InterfaceError) as error:
        raise TransientError(f"database unavailable: {type(error.orig).__name__}") from None
    except exc.DBAPIError as error:
        if error.connection_invalidated:
            raise TransientError("database connection lost") from None
        raise
