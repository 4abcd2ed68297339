"""A transaction's last statement and its COMMIT sent together: one round trip, not two.

psycopg sends COMMIT as a round trip of its own after a transaction's last statement. In
psycopg's pipeline mode the statement and the COMMIT go in one flush and the client waits
once. SQLAlchemy cannot execute in pipeline mode (it reads a result's columns before the
server has answered), so the statement runs on the driver connection under the caller's
SQLAlchemy Connection, its SQL compiled once from a Core construct. Errors come out as
SQLAlchemy's would (store/db.py translated_errors reads them), and a lost connection is
invalidated in the pool as SQLAlchemy does it. (BEGIN cannot be saved the same way: psycopg
waits for it even in pipeline mode.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.rows import dict_row
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

#: The dialect statements are compiled for (psycopg's: `%(name)s` parameters).
_DIALECT = psycopg_dialect.dialect()


class Statement:
    """SQL text of a Core construct for the driver (`%(name)s` parameters), compiled once.

    Values the construct binds itself (a literal 0, a status) are kept and sent with the
    caller's parameters. No expanding (IN-list) parameters: refused here, at import.
    """

    def __init__(self, stmt: sa.ClauseElement) -> None:
        compiled = stmt.compile(dialect=_DIALECT)
        if "POSTCOMPILE" in str(compiled):
            raise ValueError("expanding parameters cannot be compiled once")
        self.sql = str(compiled)
        self.defaults = {k: v for k, v in compiled.params.items() if v is not None}

    def params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters to send: the construct's own values, then the caller's."""
        return {**self.defaults, **given}


def last_and_commit(conn: sa.Connection, stmt: Statement, params: Mapping[str, Any]) -> dict | None:
    """Run a transaction's last statement and COMMIT in one round trip; the statement's first row.

    The transaction is committed when this returns (the caller's engine.begin() then commits
    nothing more). The statement must leave the data right whatever it returns: what is read
    from its row can no longer roll anything back. An error rolls everything back.
    """
    raw, sql, params = _driver(conn), stmt.sql, stmt.params(params)
    try:
        # Both sent, then the pipeline's one Sync on leaving the block: one wait. (Connection
        # .commit() would sync on its own, and leaving the block would sync again.)
        with raw.cursor(row_factory=dict_row) as cur, raw.cursor() as end:
            with raw.pipeline():
                cur.execute(sql, params)
                end.execute("COMMIT")
            return cur.fetchone()
    except psycopg.Error as error:
        conn._handle_dbapi_exception(error, sql, params, None, None)  # raises SQLAlchemy's error


def _driver(conn: sa.Connection) -> psycopg.Connection:
    return conn.connection.driver_connection  # type: ignore[return-value]
