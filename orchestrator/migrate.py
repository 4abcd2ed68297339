"""Apply the Alembic migrations in migrations/ (safe to run twice: Alembic records the head)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from orchestrator.settings import ROOT


def alembic_config(database_url: str) -> Config:
    """Alembic configuration pointing at migrations/, built in code (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str) -> tuple[str | None, str]:
    """Upgrade to head; returns (revision before, revision after)."""
    before = current_revision(database_url)
    command.upgrade(alembic_config(database_url), "head")
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
