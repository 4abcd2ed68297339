"""The swap's transaction on the driver connection: fewer round trips, less client work.

A swap is a handful of statements built once (store/repository/swaps.py). Through
SQLAlchemy's execution path each one costs more Python than its round trip (execution
context, result metadata and row processing); here each is compiled once from its Core
construct and run by psycopg directly. psycopg also sends BEGIN and COMMIT as round trips of
their own; in pipeline mode BEGIN goes with the transaction's first statement (first()) and
COMMIT with its last (last_and_commit()), and the client waits once for each pair
(SQLAlchemy cannot execute in pipeline mode: it reads a result's columns before the server
has answered). transaction() is the block that allows it: the connection in autocommit, so
psycopg adds no BEGIN of its own, and the server's transaction opened by first(). Statements
through SQLAlchemy run inside that transaction as usual. Errors come out as SQLAlchemy's
would (store/db.py translated_errors reads them), and a lost connection is invalidated in
the pool as SQLAlchemy does it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.string import TextLoader
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

from orchestrator.store.db import translated_errors


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


#: Longest SQL a Statement may be. psycopg turns `%(name)s` into `$n` on every execution and
#: caches that work only for queries up to 4,096 bytes (psycopg._queries.
#: MAX_CACHED_STATEMENT_LENGTH); a longer one is split by a regular expression every time.
MAX_SQL_LENGTH = 4096


class Statement:
    """SQL text of a Core construct for the driver (`%(name)s` parameters), compiled once.

    Values the construct binds itself (a status, a LIMIT) are written into the SQL; the
    caller's named parameters are sent. No expanding (IN-list) parameters: an array and
    `= ANY` / `<> ALL` instead; no SQL longer than MAX_SQL_LENGTH (both refused here, at
    import).
    """

    def __init__(self, stmt: sa.ClauseElement) -> None:
        compiled = stmt.compile(dialect=_DIALECT)
        if "POSTCOMPILE" in str(compiled):
            raise ValueError("expanding parameters cannot be compiled once")
        self.sql = str(compiled)
        if len(self.sql.encode()) > MAX_SQL_LENGTH:
            raise ValueError(
                f"{len(self.sql.encode())} bytes of SQL: psycopg would parse it again on every"
                f" execution past {MAX_SQL_LENGTH}"
            )


@contextlib.contextmanager
def transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One transaction, begun by first() with its first statement; errors translated.

    Committed by last_and_commit(), or on leaving the block; rolled back on an error. Its
    first statement must be first()'s: a statement run before it would run on its own,
    committed at once (the connection is in autocommit until first() sends BEGIN).
    """
    with translated_errors(), engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")  # no BEGIN of psycopg's own
        try:
            yield conn
        except BaseException:
            _end(conn, "ROLLBACK")
            raise
        _end(conn, "COMMIT")


def first(conn: sa.Connection, stmt: Statement, params: Mapping[str, Any]) -> dict | None:
    """BEGIN and a transaction's first statement in one round trip (inside transaction()).

    Its first row. Outside transaction() (psycopg not in autocommit) it runs as one().
    """
    if not _driver(conn).autocommit:
        return one(conn, stmt, params)
    return _run(conn, stmt, params, before="BEGIN")


def one(conn: sa.Connection, stmt: Statement, params: Mapping[str, Any]) -> dict | None:
    """Run a statement on the driver connection (the caller's transaction); its first row.

    Columns of type uuid come back as str, as the schema's UUID(as_uuid=False) columns do
    through SQLAlchemy.
    """
    return _run(conn, stmt, params)


def last_and_commit(conn: sa.Connection, stmt: Statement, params: Mapping[str, Any]) -> dict | None:
    """Run a transaction's last statement and COMMIT in one round trip; the statement's first row.

    The transaction is committed when this returns (leaving the transaction block then
    commits nothing more). The statement must leave the data right whatever it returns:
    what is read from its row can no longer roll anything back. An error rolls everything
    back.
    """
    return _run(conn, stmt, params, after="COMMIT")


def _run(
    conn: sa.Connection,
    stmt: Statement,
    params: Mapping[str, Any],
    *,
    before: str | None = None,
    after: str | None = None,
) -> dict | None:
    """The statement, with a command sent before or after it in the same pipeline; its row.

    In a pipeline, everything is sent, then one Sync on leaving the block: one wait
    (Connection.commit() would sync on its own, and leaving the block would sync again).
    """
    raw = _driver(conn)
    try:
        with _cursor(raw) as cur, raw.cursor() as command:
            if before is None and after is None:
                cur.execute(stmt.sql, params)
            else:
                with raw.pipeline():
                    if before is not None:
                        command.execute(before)
                    cur.execute(stmt.sql, params)
                    if after is not None:
                        command.execute(after)
            return cur.fetchone()
    except psycopg.Error as error:
        conn._handle_dbapi_exception(error, stmt.sql, params, None, None)  # raises


def _end(conn: sa.Connection, command: str) -> None:
    """COMMIT or ROLLBACK the server's transaction, if one is open."""
    if conn.invalidated:  # the connection was lost, and its transaction with it
        return
    raw = _driver(conn)
    if raw.closed or raw.pgconn.transaction_status == TransactionStatus.IDLE:
        return
    try:
        raw.execute(command)
    except psycopg.Error as error:
        if command == "ROLLBACK":  # already failing: drop the connection, keep the first error
            conn.invalidate()
            return
        conn._handle_dbapi_exception(error, command, None, None, None)  # raises


def _driver(conn: sa.Connection) -> psycopg.Connection:
    return conn.connection.driver_connection  # type: ignore[return-value]


def _cursor(raw: psycopg.Connection) -> psycopg.Cursor:
    cur = raw.cursor(row_factory=dict_row)
    cur.adapters.register_loader("uuid", TextLoader)
    return cur
