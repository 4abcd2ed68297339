"""Apply the Alembic migrations in migrations/ (safe to run twice: Alembic records the head).

An unversioned database holding the tables other services created is adopted first (see
migrations/env.py and orchestrator/store/adoption/run.py); `check` says what upgrade would do and which
rows block it, changing nothing.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from orchestrator.store.adoption import assess as adoption
from orchestrator.store.adoption.model import FINAL, LOCKED, ONLINE, Plan, Step
from orchestrator.store.adoption.run import RETRYABLE, AdoptionLockTimeout, Options

#: Alembic's scripts: migrations/ at the repository root (app.settings.ROOT; the Dockerfile
#: installs the project editable so that it stays there).
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(database_url: str, options: Options | None = None) -> Config:
    """Alembic configuration pointing at migrations/, built in code (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["adoption_options"] = options or Options()
    return config


def upgrade(database_url: str, options: Options | None = None) -> tuple[str | None, str]:
    """Upgrade to head (adopting other services' tables first); returns (before, after).

    A revision whose DDL did not get its lock within lock_timeout is rolled back and retried
    (the revisions before it stay applied), so a long transaction elsewhere delays migrate
    instead of queueing every writer behind it.
    """
    options = options or Options()
    before = current_revision(database_url)
    for attempt in range(options.attempts):
        try:
            command.upgrade(alembic_config(database_url, options), "head")
            break
        except sa.exc.OperationalError as error:
            if not isinstance(error.orig, RETRYABLE):
                raise
            options.emit(
                "retry", f"a revision's lock not granted within {options.lock_timeout_ms} ms"
            )
            time.sleep(min(5.0, 0.25 * 2**attempt) + random.uniform(0, 0.25))
    else:
        raise AdoptionLockTimeout(
            f"migrate gave up: a revision could not take its locks within"
            f" {options.lock_timeout_ms} ms in {options.attempts} attempts; the revisions before"
            " it are applied, run migrate again"
        )
    return before, current_revision(database_url) or ""


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision(database_url: str) -> str:
    """The newest revision in migrations/."""
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head() or ""


@dataclass
class CheckReport:
    """What `migrate` would do to a database, and what stops it (migrate --check)."""

    revision: str | None
    head: str
    pending: list[str]
    mode: str  # "up to date", "create", "upgrade", "adopt"
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    blockers: list[adoption.Blocker] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        """Whether migrate would refuse."""
        return bool(self.problems or self.blockers)

    def as_dict(self) -> dict:
        """JSON shape."""
        return {
            "revision": self.revision,
            "head": self.head,
            "mode": self.mode,
            "pending_revisions": self.pending,
            "adoption_steps": [
                {"phase": s.phase, "table": s.table, "what": s.what, "sql": s.sql.strip()}
                for s in self.steps
            ],
            "problems": self.problems,
            "blockers": [b.as_dict() for b in self.blockers],
            "blocked": self.blocked,
        }

    def lines(self) -> list[str]:
        """Human report: the state, the plan by phase, the blockers with their rows."""
        out = [f"database at revision {self.revision or 'none'}, head {self.head}: {self.mode}"]
        if self.steps:
            out.append(f"adoption ({len(self.steps)} steps), then stamped 0001:")
            out += [f"  [{_PHASE_LABELS[s.phase]}] {s.table}: {s.what}" for s in self.steps]
        if self.pending:
            out.append("revisions to apply: " + ", ".join(self.pending))
        if self.blocked:
            out.append(adoption.summary(self.problems, self.blockers, refused=False))
            out += adoption.detail_lines(self.problems, self.blockers)
        elif self.mode != "up to date":
            out.append("nothing blocks migrate")
        return out


_PHASE_LABELS = {
    LOCKED: "short lock",
    ONLINE: "online    ",
    FINAL: "short lock",
}


def check(database_url: str) -> CheckReport:
    """What upgrade would do and which rows block it; reads only (one read-only snapshot)."""
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    script = ScriptDirectory.from_config(alembic_config(database_url))
    head = script.get_current_head() or ""
    try:
        with adoption.snapshot(engine) as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
            adopt = revision is None and bool(adoption.shared_tables_present(conn))
            the_plan, blockers = adoption.assess(conn) if adopt else (Plan(), [])
    finally:
        engine.dispose()
    start = "0001" if adopt else revision
    pending = [r.revision for r in reversed(list(script.iterate_revisions(head, start)))]
    if adopt:
        mode = "adopt the existing tables"
    elif revision is None:
        mode = "create the schema"
    else:
        mode = "upgrade" if pending else "up to date"
    return CheckReport(revision, head, pending, mode, the_plan.steps, the_plan.problems, blockers)
