"""Queries for the rows that would break a rule: what the preflight runs before any step."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.store.adoption.baseline import Table
from orchestrator.store.adoption.model import ROW_CAP, Catalog


def source(table: Table, cat: Catalog) -> str:
    """The table as a row source, missing columns read as the default they will be added with."""
    have = cat.columns[table.name]
    extra = [
        f", {c.default or 'NULL'}::{c.type} AS {c.name}"
        for c in table.columns
        if c.name not in have
    ]
    return f"(SELECT t.*{''.join(extra)} FROM {table.name} AS t) AS t"


def row_id(table: Table, cat: Catalog) -> str:
    return "t.id::text" if "id" in cat.columns[table.name] else "t.ctid::text"


def show(columns: Sequence[str]) -> str:
    if not columns:
        return "''"
    shown = ", ".join(f"'{c}=' || coalesce(t.{c}::text, 'NULL')" for c in columns)
    return f"concat_ws(', ', {shown})"


def rows_where(
    table: Table, cat: Catalog, where: str, shows: Sequence[str], order: str = "1"
) -> str:
    return (
        f"SELECT {row_id(table, cat)}, {show(shows)}, count(*) OVER () FROM {source(table, cat)}"
        f" WHERE {where} ORDER BY {order} LIMIT {ROW_CAP}"
    )
