"""What adoption works on: the catalog (what exists), steps, row checks and the plan they make."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Offending rows listed per constraint (the count is always exact).
ROW_CAP = 20

#: Step phases, in the order they run.
LOCKED = "locked"  # one short transaction holding ACCESS EXCLUSIVE on the shared tables
ONLINE = "online"  # one statement at a time, writers keep going (CONCURRENTLY, VALIDATE)
FINAL = "final"  # a second short locked transaction (USING INDEX, SET NOT NULL)
PHASES = (LOCKED, ONLINE, FINAL)


@dataclass(frozen=True)
class Col:
    """An existing column as the catalog describes it."""

    type: str
    not_null: bool
    has_default: bool


@dataclass
class Catalog:
    """What exists now (current schema): tables, columns, constraints, indexes, trigger."""

    columns: dict[str, dict[str, Col]] = field(default_factory=dict)
    #: (table, name) -> validated
    constraints: dict[tuple[str, str], bool] = field(default_factory=dict)
    primary_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: name -> valid
    indexes: dict[str, bool] = field(default_factory=dict)
    commented: set[str] = field(default_factory=set)
    has_function: bool = False
    has_trigger: bool = False
    pool_config_rows: int = 0
    #: Disconnected chips without a since-when (None: the column does not exist yet).
    unrecorded_disconnections: int | None = None
    #: Tables this role may not alter (owned by another role) -> their owner.
    not_owned: dict[str, str] = field(default_factory=dict)

    @property
    def tables(self) -> set[str]:
        """Names of the tables that exist."""
        return set(self.columns)


@dataclass(frozen=True)
class Step:
    """One change: its SQL, how to take it back, and when it runs (phase)."""

    phase: str
    table: str
    what: str
    sql: str
    undo: str | None = None
    #: Can fail on rows (a validation, a unique build): run first among the online steps.
    early: bool = False


@dataclass(frozen=True)
class RowCheck:
    """A query for the rows that break `constraint`: (id, values, total count) rows."""

    constraint: str
    table: str
    rule: str
    sql: str


@dataclass
class Plan:
    """The steps in phase order, the row checks they need, and problems no step can fix."""

    steps: list[Step] = field(default_factory=list)
    checks: list[RowCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def phase(self, name: str) -> list[Step]:
        """The steps of one phase, in order."""
        return [s for s in self.steps if s.phase == name]
