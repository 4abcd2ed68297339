"""Adopting tables other services created: what exists, and which rows block the plan (reads only).

`inspect` reads the catalog, plan.plan (pure) turns it into steps towards migration 0001,
`preflight` finds the rows that break a constraint a step would add. The steps run in run.py;
`chip-orchestrator migrate --check` prints this module's report.
Nothing here writes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from orchestrator.errors import Rejected
from orchestrator.store.adoption import baseline
from orchestrator.store.adoption.model import Catalog, Col, Plan
from orchestrator.store.adoption.plan import plan


@dataclass(frozen=True)
class Blocker:
    """A constraint that existing rows break: how many, and the first ROW_CAP (id, values)."""

    constraint: str
    table: str
    rule: str
    count: int
    rows: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict:
        """JSON shape (migrate --check --json)."""
        return {
            "constraint": self.constraint,
            "table": self.table,
            "rule": self.rule,
            "count": self.count,
            "rows": [{"id": i, "values": v} for i, v in self.rows],
        }


class AdoptionBlocked(Rejected):
    """Raised when existing rows or column types keep the tables from being adopted; nothing changed."""

    def __init__(
        self, problems: Sequence[str], blockers: Sequence[Blocker], note: str = ""
    ) -> None:
        self.problems, self.blockers = list(problems), list(blockers)
        super().__init__(summary(self.problems, self.blockers, note), code="adoption_blocked")

    def details(self) -> list[str]:
        """The lines after the summary: each problem, each constraint and its offending rows."""
        return detail_lines(self.problems, self.blockers)


def summary(
    problems: Sequence[str], blockers: Sequence[Blocker], note: str = "", *, refused: bool = True
) -> str:
    """One line: what blocks migrate, and that nothing was changed."""
    if problems:
        what = f"{len(problems)} table(s)/column(s) cannot be adopted as they are"
    else:
        what = "rows break " + ", ".join(f"{b.constraint} ({b.count})" for b in blockers)
    verb = "migrate refused" if refused else "migrate would refuse"
    note = note or ("nothing was changed" if refused else "fix these first")
    return f"{verb}: {what}; {note} (details below; fixes: docs/adoption.md)"


def detail_lines(problems: Sequence[str], blockers: Sequence[Blocker]) -> list[str]:
    """Human lines for problems and blockers (ids named, capped at ROW_CAP per constraint)."""
    lines = [f"  {p}" for p in problems]
    for b in blockers:
        more = f", first {len(b.rows)} shown" if b.count > len(b.rows) else ""
        lines.append(f"  {b.constraint} ({b.table}: {b.rule}): {b.count} row(s){more}")
        lines += [f"    id {row_id}  {values}".rstrip() for row_id, values in b.rows]
    return lines


# -- catalog -------------------------------------------------------------------------------------

_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       d.adbin IS NOT NULL OR a.attidentity <> ''
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname = ANY(:tables)
  AND a.attnum > 0 AND NOT a.attisdropped
"""
_CONSTRAINTS = """
SELECT c.relname, con.conname, con.contype, con.convalidated,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) AS k
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relname = ANY(:tables)
"""
_INDEXES = """
SELECT i.relname, x.indisvalid
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE n.nspname = current_schema()
"""
_NOT_OWNED = """
SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relname = ANY(:tables) AND c.relkind IN ('r', 'p')
  AND NOT pg_has_role(current_user, c.relowner, 'USAGE')
"""
_COMMENTED = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relname = ANY(:tables)
  AND obj_description(c.oid, 'pg_class') IS NOT NULL
"""
_FUNCTION = """
SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname = current_schema() AND p.proname = :name)
"""
_TRIGGER = """
SELECT EXISTS (SELECT 1 FROM pg_trigger
               WHERE tgrelid = to_regclass('chips') AND tgname = :name AND NOT tgisinternal)
"""


def _base_type(name: str) -> str:
    """format_type without its modifier: 'character varying(20)' -> 'character varying'."""
    return re.sub(r"\(.*?\)", "", name).strip()


def inspect(conn: sa.Connection) -> Catalog:
    """Read the catalog for the tables of 0001 (reads only)."""
    tables = [t.name for t in baseline.TABLES]
    cat = Catalog()
    for table, name, type_, not_null, has_default in conn.execute(
        sa.text(_COLUMNS), {"tables": tables}
    ):
        cat.columns.setdefault(table, {})[name] = Col(_base_type(type_), not_null, has_default)
    for table, name, kind, validated, columns in conn.execute(
        sa.text(_CONSTRAINTS), {"tables": tables}
    ):
        cat.constraints[(table, name)] = validated
        if kind == "p":
            cat.primary_keys[table] = tuple(columns)
    cat.indexes = dict(conn.execute(sa.text(_INDEXES)).all())
    cat.commented = set(conn.execute(sa.text(_COMMENTED), {"tables": tables}).scalars())
    cat.not_owned = dict(conn.execute(sa.text(_NOT_OWNED), {"tables": tables}).all())
    name = baseline.TRIGGER_NAME
    cat.has_function = conn.execute(sa.text(_FUNCTION), {"name": name}).scalar_one()
    cat.has_trigger = conn.execute(sa.text(_TRIGGER), {"name": name}).scalar_one()
    if "pool_config" in cat.columns:
        cat.pool_config_rows = conn.execute(sa.text("SELECT count(*) FROM pool_config")).scalar()
    chips = cat.columns.get("chips", {})
    if {"evolution_connected", "evolution_disconnected_at"} <= set(chips):
        cat.unrecorded_disconnections = conn.exec_driver_sql(
            "SELECT count(*) FROM chips WHERE NOT evolution_connected"
            " AND evolution_disconnected_at IS NULL"
        ).scalar()
    return cat


def shared_tables_present(conn: sa.Connection) -> list[str]:
    """Which of the tables other services create exist (any of them: adopt, not create)."""
    found = conn.execute(
        sa.text(
            "SELECT t FROM unnest(CAST(:names AS text[])) AS t WHERE to_regclass(t) IS NOT NULL"
        ),
        {"names": list(baseline.SHARED)},
    )
    return list(found.scalars())


# -- preflight (reads) ---------------------------------------------------------------------------


def preflight(conn: sa.Connection, the_plan: Plan) -> list[Blocker]:
    """Run every row check of the plan; the constraints that existing rows break."""
    if the_plan.problems:
        return []  # the checks may not even type-check until the columns are fixed
    blockers = []
    for check in the_plan.checks:
        rows = conn.exec_driver_sql(check.sql).all()
        if rows:
            blockers.append(
                Blocker(
                    check.constraint,
                    check.table,
                    check.rule,
                    int(rows[0][2]),
                    tuple((r[0], r[1] or "") for r in rows),
                )
            )
    return blockers


@contextlib.contextmanager
def snapshot(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A REPEATABLE READ, READ ONLY transaction: every check sees the same rows, none is written."""
    connection = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with connection as conn, conn.begin():
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        yield conn


def assess(conn: sa.Connection) -> tuple[Plan, list[Blocker]]:
    """Plan and blockers from one consistent snapshot (the caller's transaction)."""
    the_plan = plan(inspect(conn))
    return the_plan, preflight(conn, the_plan)
