"""The swap's statements on the driver connection: less client work, and COMMIT sent with the last.

A swap is a handful of statements built once (store/repository/swaps.py). Through
SQLAlchemy's execution path each one costs more Python than its round trip (execution
context, result metadata and row processing); here each is compiled once from its Core
construct and run by psycopg directly, under the caller's SQLAlchemy Connection and
transaction. psycopg sends COMMIT as a round trip of its own after a transaction's last
statement; in pipeline mode the statement and the COMMIT go in one flush and the client
waits once (SQLAlchemy cannot execute in pipeline mode: it reads a result's columns before
the server has answered). Errors come out as
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
from psycopg.types.string import TextLoader
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect


class _LiteralValuesCompiler(psycopg_dialect.dialect.statement_compiler):  # type: ignore[name-defined]
    """Values a construct binds itself ('ready', LIMIT 1) rendered as literals in the SQL.

    The server then plans a prepared statement once for all executions (a generic plan):
    with `status = $1` it could not know that idx_chips_ready_best (WHERE status = 'ready')
    applies, and would plan every execution again.
    """

    def visit_bindparam(self, bindparam: sa.BindParameter, **kw: Any) -> str:
        if bindparam.value is not None and bindparam.callable is None:
            return self.render_literal_bindparam(bindparam, **kw)
        return super().visit_bindparam(bindparam, **kw)


#: The dialect statements are compiled for (psycopg's: `%(name)s` parameters).
_DIALECT = psycopg_dialect.dialect()
_DIALECT.statement_compiler = _LiteralValuesCompiler


class Statement:
    """SQL text of a Core construct for the driver (`%(name)s` parameters), compiled once.

    Values the construct binds itself (a status, a LIMIT) are written into the SQL; the
    caller's named parameters are sent. No expanding (IN-list) parameters: an array and
    `= ANY` / `<> ALL` instead (refused here, at import).
    """

    def __init__(self, stmt: sa.ClauseElement) -> None:
        compiled = stmt.compile(dialect=_DIALECT)
        if "POSTCOMPILE" in str(compiled):
            raise ValueError("expanding parameters cannot be compiled once")
        self.sql = str(compiled)
        self.names = frozenset(compiled.params)


def one(conn: sa.Connection, stmt: Statement, params: Mapping[str, Any]) -> dict | None:
    """Run a statement on the driver connection (the caller's transaction); its first row.

    Columns of type uuid come back as str, as the schema's UUID(as_uuid=False) columns do
    through SQLAlchemy.
    """
    raw = _driver(conn)
    try:
        with _cursor(raw) as cur:
            cur.execute(stmt.sql, params)
            return cur.fetchone()
    except psycopg.Error as error:
        conn._handle_dbapi_exception(error, stmt.sql, params, None, None)  # raises


def last_and_commit(conn: sa.Connection, stmt: Statement, params: Mapping[str, Any]) -> dict | None:
    """Run a transaction's last statement and COMMIT in one round trip; the statement's first row.

    The transaction is committed when this returns (the caller's engine.begin() then commits
    nothing more). The statement must leave the data right whatever it returns: what is read
    from its row can no longer roll anything back. An error rolls everything back.
    """
    raw, sql = _driver(conn), stmt.sql
    try:
        # Both sent, then the pipeline's one Sync on leaving the block: one wait. (Connection
        # .commit() would sync on its own, and leaving the block would sync again.)
        with _cursor(raw) as cur, raw.cursor() as end:
            with raw.pipeline():
                cur.execute(sql, params)
                end.execute("COMMIT")
            return cur.fetchone()
    except psycopg.Error as error:
        conn._handle_dbapi_exception(error, sql, params, None, None)  # raises SQLAlchemy's error


def _driver(conn: sa.Connection) -> psycopg.Connection:
    return conn.connection.driver_connection  # type: ignore[return-value]


def _cursor(raw: psycopg.Connection) -> psycopg.Cursor:
    cur = raw.cursor(row_factory=dict_row)
    cur.adapters.register_loader("uuid", TextLoader)
    return cur
