"""Adoption, planned: the steps from a catalog to migration 0001's schema (pure, no database).

`plan(catalog)` turns what exists (assess.py reads it) into steps towards the model in
baseline.py, each with its phase and how to take it back, and the row checks the
preflight runs before any of them: one per constraint a step adds or validates.
"""

from __future__ import annotations

from orchestrator.store.adoption import baseline
from orchestrator.store.adoption.baseline import Table
from orchestrator.store.adoption.model import (
    FINAL,
    LOCKED,
    ONLINE,
    PHASES,
    Catalog,
    Plan,
    RowCheck,
    Step,
)
from orchestrator.store.adoption.rows import rows_where, source
from orchestrator.store.adoption.trigger import plan_trigger


def plan(cat: Catalog) -> Plan:
    """The steps that take `cat` to 0001's schema, with the row checks they need."""
    out = Plan()
    missing_shared = [t for t in baseline.SHARED if t not in cat.tables]
    if missing_shared and len(missing_shared) < len(baseline.SHARED):
        present = ", ".join(t for t in baseline.SHARED if t in cat.tables)
        out.problems.append(
            f"{', '.join(missing_shared)} missing while {present} exist: not the seed's schema"
        )
        return out
    for table, owner in sorted(cat.not_owned.items()):
        out.problems.append(
            f"{table} is owned by role {owner}: run migrate as {owner}"
            f" (or have it run ALTER TABLE {table} OWNER TO <migrate's role>)"
        )
    if "chips" in cat.tables and cat.primary_keys.get("chips") != ("id",):
        out.problems.append("chips has no primary key on id (the foreign keys reference it)")
    if out.problems:
        return out
    for table in baseline.TABLES:
        if table.name not in cat.tables:
            _plan_create(out, table)
        elif table.columns:
            _plan_table(out, cat, table)
    plan_trigger(out, cat)
    if "pool_config" in cat.tables:
        _plan_one_row(out, cat)
    # Stable sort: the order within a phase is kept, row-dependent online steps go first.
    out.steps.sort(key=lambda s: (PHASES.index(s.phase), not s.early))
    return out


def _plan_create(out: Plan, table: Table) -> None:
    if table.create is None:
        return  # a shared table: all three missing means a fresh database (0001 creates them)
    name = table.name
    # A table made by this run is taken back only while nobody has written to it yet.
    undo = (
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM {name}) THEN DROP TABLE {name}; END IF; END $$"
    )
    out.steps.append(Step(LOCKED, name, f"create table {name}", table.create, undo))


def _plan_table(out: Plan, cat: Catalog, table: Table) -> None:
    have = cat.columns[table.name]
    name = table.name
    if any(have.get(c.name) and have[c.name].type not in c.accepted for c in table.columns):
        for c in table.columns:
            if have.get(c.name) and have[c.name].type not in c.accepted:
                expected = " or ".join(c.accepted)
                out.problems.append(f"{name}.{c.name} is {have[c.name].type}; expected {expected}")
        return
    for col in table.columns:
        _plan_column(out, cat, table, col)
    for check in table.checks:
        validated = cat.constraints.get((name, check.name))
        if validated:
            continue
        out.checks.append(
            RowCheck(
                check.name,
                name,
                check.expr,
                rows_where(table, cat, f"NOT COALESCE(({check.expr}), true)", check.shows),
            )
        )
        sql = f"ALTER TABLE {name} ADD CONSTRAINT {check.name} CHECK ({check.expr})"
        if validated is None and table.small:
            undo = f"ALTER TABLE {name} DROP CONSTRAINT IF EXISTS {check.name}"
            out.steps.append(Step(LOCKED, name, f"add constraint {check.name}", sql, undo))
        else:
            _not_valid_then_validate(out, table, check.name, sql, added=validated is None)
    for fk in table.foreign_keys:
        validated = cat.constraints.get((name, fk.name))
        if validated:
            continue
        where = (
            f"t.{fk.column} IS NOT NULL AND NOT EXISTS"
            f" (SELECT 1 FROM {fk.references} AS r WHERE r.id = t.{fk.column})"
        )
        rule = f"{fk.column} REFERENCES {fk.references}(id)"
        out.checks.append(
            RowCheck(fk.name, name, rule, rows_where(table, cat, where, (fk.column,)))
        )
        sql = f"ALTER TABLE {name} ADD CONSTRAINT {fk.name} FOREIGN KEY ({fk.column}) REFERENCES {fk.references}(id)"
        _not_valid_then_validate(out, table, fk.name, sql, added=validated is None)
    for unique in table.uniques:
        _plan_unique(out, cat, table, unique)
    for index in table.indexes:
        if not cat.indexes.get(index.name):
            create = f"CREATE INDEX CONCURRENTLY {index.name} ON {name} {index.definition}"
            _online_index(out, cat, name, index.name, create)
    if table.comment and name not in cat.commented:
        out.steps.append(
            Step(
                LOCKED,
                name,
                f"comment on table {name}",
                f"COMMENT ON TABLE {name} IS '{table.comment}'",
                f"COMMENT ON TABLE {name} IS NULL",
            )
        )


def _plan_column(out: Plan, cat: Catalog, table: Table, col: baseline.Column) -> None:
    name, have = table.name, cat.columns[table.name].get(col.name)
    if have is None:
        if col.key or (col.not_null and not col.default):
            out.problems.append(f"{name}.{col.name} missing (no value to give existing rows)")
            return
        # A constant (or now(): stable, evaluated once) default: a catalog change, no rewrite.
        spec = col.type + (f" NOT NULL DEFAULT {col.default}" if col.not_null else "")
        if col.default and not col.not_null:
            spec += f" DEFAULT {col.default}"
        out.steps.append(
            Step(
                LOCKED,
                name,
                f"add column {name}.{col.name} {spec}",
                f"ALTER TABLE {name} ADD COLUMN {col.name} {spec}",
                f"ALTER TABLE {name} DROP COLUMN IF EXISTS {col.name}",
            )
        )
        for column, comment in table.column_comments:
            if column == col.name:
                sql = f"COMMENT ON COLUMN {name}.{column} IS '{comment}'"
                out.steps.append(Step(LOCKED, name, f"comment on column {name}.{column}", sql))
        return
    if col.default and not have.has_default and (not col.key or have.type == col.type):
        out.steps.append(
            Step(
                LOCKED,
                name,
                f"set default {name}.{col.name} = {col.default}",
                f"ALTER TABLE {name} ALTER COLUMN {col.name} SET DEFAULT {col.default}",
                f"ALTER TABLE {name} ALTER COLUMN {col.name} DROP DEFAULT",
            )
        )
    if col.not_null and not have.not_null and not col.key:
        _plan_not_null(out, cat, table, col.name)


def _plan_not_null(out: Plan, cat: Catalog, table: Table, column: str) -> None:
    """SET NOT NULL; on a big table through a validated CHECK, so SET NOT NULL scans nothing."""
    name = table.name
    # The rule keeps the name PostgreSQL 18 gives a NOT NULL constraint (a fresh database's). The
    # helper must not hold it while SET NOT NULL runs, or 18 names the new one <name>1 instead.
    rule_name, helper = f"{name}_{column}_not_null", f"{name}_{column}_not_null_check"
    rule = f"{column} IS NOT NULL"
    out.checks.append(
        RowCheck(rule_name, name, rule, rows_where(table, cat, f"t.{column} IS NULL", ()))
    )
    set_sql = f"ALTER TABLE {name} ALTER COLUMN {column} SET NOT NULL"
    unset = f"ALTER TABLE {name} ALTER COLUMN {column} DROP NOT NULL"
    if table.small:
        out.steps.append(Step(LOCKED, name, f"set not null {name}.{column}", set_sql, unset))
        return
    if not cat.constraints.get((name, helper)):
        add = f"ALTER TABLE {name} ADD CONSTRAINT {helper} CHECK ({rule})"
        _not_valid_then_validate(
            out, table, helper, add, added=(name, helper) not in cat.constraints
        )
    out.steps.append(Step(FINAL, name, f"set not null {name}.{column}", set_sql, unset))
    out.steps.append(
        Step(
            FINAL,
            name,
            f"drop helper constraint {helper}",
            f"ALTER TABLE {name} DROP CONSTRAINT {helper}",
        )
    )


def _not_valid_then_validate(
    out: Plan, table: Table, constraint: str, sql: str, added: bool
) -> None:
    name = table.name
    if added:
        undo = f"ALTER TABLE {name} DROP CONSTRAINT IF EXISTS {constraint}"
        what = f"add constraint {constraint} NOT VALID"
        out.steps.append(Step(LOCKED, name, what, f"{sql} NOT VALID", undo))
    out.steps.append(
        Step(
            ONLINE,
            name,
            f"validate constraint {constraint}",
            f"ALTER TABLE {name} VALIDATE CONSTRAINT {constraint}",
            early=True,
        )
    )


def _online_index(
    out: Plan, cat: Catalog, table: str, index: str, create: str, early: bool = False
) -> None:
    """CREATE INDEX CONCURRENTLY (writers go on); an invalid leftover of a failed build goes first."""
    if cat.indexes.get(index) is False:  # left invalid by a CONCURRENTLY build that failed
        drop = f"DROP INDEX CONCURRENTLY IF EXISTS {index}"
        out.steps.append(Step(ONLINE, table, f"drop invalid index {index}", drop, early=early))
    undo = f"DROP INDEX IF EXISTS {index}"
    out.steps.append(Step(ONLINE, table, f"create index {index}", create, undo, early=early))


def _plan_unique(out: Plan, cat: Catalog, table: Table, unique: baseline.Unique) -> None:
    name, column = table.name, unique.column
    if cat.constraints.get((name, unique.name)) or (unique.where and cat.indexes.get(unique.name)):
        return
    if column in cat.columns[name]:
        scope = f" AND ({unique.where})" if unique.where else ""
        dupes = (
            f"t.{column} IS NOT NULL{scope} AND t.{column} IN (SELECT t.{column}"
            f" FROM {source(table, cat)} WHERE t.{column} IS NOT NULL{scope}"
            f" GROUP BY t.{column} HAVING count(*) > 1)"
        )
        rule = f"{column} unique" + (f" where {unique.where}" if unique.where else "")
        out.checks.append(
            RowCheck(
                unique.name,
                name,
                rule,
                rows_where(table, cat, dupes, (column,), order=f"t.{column}::text, 1"),
            )
        )
    where = f" WHERE {unique.where}" if unique.where else ""
    create = f"CREATE UNIQUE INDEX CONCURRENTLY {unique.name} ON {name} ({column}){where}"
    if not cat.indexes.get(unique.name):  # a valid one is left by an interrupted run
        _online_index(out, cat, name, unique.name, create, early=True)
    if not unique.where:
        out.steps.append(
            Step(
                FINAL,
                name,
                f"add constraint {unique.name} UNIQUE USING INDEX",
                f"ALTER TABLE {name} ADD CONSTRAINT {unique.name} UNIQUE USING INDEX {unique.name}",
                f"ALTER TABLE {name} DROP CONSTRAINT IF EXISTS {unique.name}",
            )
        )


def _plan_one_row(out: Plan, cat: Catalog) -> None:
    has_guard = cat.constraints.get(("pool_config", baseline.ONE_ROW_CHECK)) or cat.indexes.get(
        baseline.ONE_ROW_INDEX
    )
    if not has_guard:
        table = baseline.POOL_CONFIG
        out.checks.append(
            RowCheck(
                baseline.ONE_ROW_INDEX,
                "pool_config",
                "exactly one row",
                rows_where(table, cat, "(SELECT count(*) FROM pool_config) > 1", ()),
            )
        )
        out.steps.append(
            Step(
                LOCKED,
                "pool_config",
                f"create unique index {baseline.ONE_ROW_INDEX} (one row, whatever its id)",
                f"CREATE UNIQUE INDEX {baseline.ONE_ROW_INDEX} ON pool_config ((true))",
                f"DROP INDEX IF EXISTS {baseline.ONE_ROW_INDEX}",
            )
        )
    if cat.pool_config_rows == 0:
        out.steps.append(
            Step(
                LOCKED,
                "pool_config",
                "insert the default pool_config row",
                "INSERT INTO pool_config DEFAULT VALUES",
                "DELETE FROM pool_config",
            )
        )
