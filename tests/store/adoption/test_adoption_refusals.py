"""Adoption refused, changing nothing: rows that break a constraint (named by id), types it
cannot adopt, a table owned by another role; and `migrate --check`, which says so first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from orchestrator.app.settings import ROOT
from orchestrator.store import migrate
from orchestrator.store.adoption import assess as adoption
from orchestrator.store.adoption.run import Event, Options
from tests.support.adoption import (
    VIOLATIONS,
    seed,
    state,
)

pytestmark = pytest.mark.db


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize("violation", list(VIOLATIONS))
def test_a_violating_row_is_refused_by_id_and_nothing_changes(
    url: str, engine: sa.Engine, violation: str
) -> None:
    # Given a seed-era database with one row that breaks a constraint 0001 has
    seed(engine)
    sql, constraint = VIOLATIONS[violation]
    with engine.begin() as conn:
        offending = conn.exec_driver_sql(sql).scalar_one()
    before = state(engine)
    # When migrate runs
    with pytest.raises(adoption.AdoptionBlocked) as refused:
        migrate.upgrade(url)
    # Then it names the constraint and the row's id, and nothing at all changed
    assert constraint in refused.value.reason
    details = "\n".join(refused.value.details())
    assert f"{constraint} (" in details and f"id {offending}" in details
    assert state(engine) == before


@pytest.mark.parametrize(
    "violation", ["trust 150", "duplicate telefone", "conversation on an unknown chip"]
)
def test_a_violating_row_written_while_migrate_runs_is_refused_and_everything_undone(
    url: str, engine: sa.Engine, violation: str
) -> None:
    # Given a clean seed-era database, and a service that writes a bad row right after the
    # preflight found none (forced: the hook runs between preflight and the first lock)
    seed(engine)
    before = state(engine)
    sql, constraint = VIOLATIONS[violation]
    written: list[str] = []

    def hook(event: Event) -> None:
        if event.kind == "preflight":
            with engine.begin() as conn:
                written.append(conn.exec_driver_sql(sql).scalar_one())

    # When migrate runs
    with pytest.raises(adoption.AdoptionBlocked) as refused:
        migrate.upgrade(url, Options(progress=hook))
    # Then the row is named, and what this run added was taken back: the schema is as before
    assert f"id {written[0]}" in "\n".join(refused.value.details())
    assert constraint in refused.value.reason and "removed" in refused.value.reason
    fingerprint, _ = state(engine)
    assert fingerprint == before[0]


def test_incompatible_column_types_are_refused_before_anything(url: str, engine: sa.Engine) -> None:
    seed(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE chips ALTER COLUMN trust_score TYPE text")
    before = state(engine)
    with pytest.raises(adoption.AdoptionBlocked) as refused:
        migrate.upgrade(url)
    assert "chips.trust_score is text" in "\n".join(refused.value.details())
    assert state(engine) == before


# -- migrate --check ------------------------------------------------------------------------------


def test_check_reports_plan_and_blockers_and_changes_nothing(url: str, engine: sa.Engine) -> None:
    seed(engine)
    clean = migrate.check(url)
    assert clean.mode.startswith("adopt") and not clean.blocked
    assert clean.pending[:4] == ["0002_outbox", "0003_fit", "0004_purchases", "0005_scale"]
    assert clean.pending[-1] == migrate.head_revision(url)
    assert any(s.what == "validate constraint chips_trust_score_in_range" for s in clean.steps)
    with engine.begin() as conn:
        bad = conn.exec_driver_sql(VIOLATIONS["trust 150"][0]).scalar_one()
    before = state(engine)
    report = migrate.check(url)
    assert report.blocked
    [blocker] = report.blockers
    assert (blocker.constraint, blocker.rows[0][0]) == ("chips_trust_score_in_range", bad)
    assert state(engine) == before


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m orchestrator ARGS` (== chip-orchestrator) on this test's database."""
    env = {**os.environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_check_names_the_blocking_rows_and_migrate_refuses_then_adopts(
    url: str, engine: sa.Engine
) -> None:
    # Given a seed-era database with a chip whose trust is 150
    seed(engine)
    with engine.begin() as conn:
        bad = conn.exec_driver_sql(VIOLATIONS["trust 150"][0]).scalar_one()
    before = state(engine)
    # When ops run the runbook's first command
    check = run_cli(url, "migrate", "--check")
    # Then it shows the plan and the blocking row, exits 1, and changes nothing
    assert check.returncode == 1, check.stderr
    assert "adopt the existing tables" in check.stdout
    assert "[online    ] chips: validate constraint chips_trust_score_in_range" in check.stdout
    assert f"id {bad}  trust_score=150" in check.stdout
    report = json.loads(run_cli(url, "migrate", "--check", "--json").stdout)
    assert report["blocked"] and report["blockers"][0]["rows"][0]["id"] == bad
    # ... and migrate refuses: one summary line, then the rows; exit 2; nothing changed
    refused = run_cli(url, "migrate")
    assert refused.returncode == 2
    first, *rest = refused.stderr.strip().splitlines()
    assert first.startswith("chip-orchestrator: migrate refused: rows break chips_trust_score")
    assert any(bad in line for line in rest)
    assert state(engine) == before
    # When the row is fixed, check is clean and migrate adopts, then says unchanged
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE chips SET trust_score = 100 WHERE id = :i"), {"i": bad})
    clean = run_cli(url, "migrate", "--check")
    assert clean.returncode == 0 and "nothing blocks migrate" in clean.stdout
    adopted = run_cli(url, "migrate")
    assert adopted.returncode == 0, adopted.stderr
    assert "done: validate constraint chips_trust_score_in_range" in adopted.stdout
    assert "(was unversioned: adopted the existing tables)" in adopted.stdout
    assert "(unchanged)" in run_cli(url, "migrate").stdout
    up_to_date = run_cli(url, "migrate", "--check")
    assert up_to_date.returncode == 0 and "up to date" in up_to_date.stdout


def test_a_table_owned_by_another_role_is_refused_before_anything(
    url: str, engine: sa.Engine
) -> None:
    # Given seed-era tables where chips belongs to another service's role, and migrate running
    # as a role that owns the rest
    seed(engine)
    suffix = uuid.uuid4().hex[:8]
    service, migrator = f"chiporch_svc_{suffix}", f"chiporch_mig_{suffix}"
    database = make_url(url).database
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {service} NOLOGIN")
        conn.exec_driver_sql(f"CREATE ROLE {migrator} LOGIN")
        conn.exec_driver_sql(f'GRANT CREATE ON DATABASE "{database}" TO {migrator}')
        conn.exec_driver_sql(f"GRANT CREATE ON SCHEMA public TO {migrator}")
        conn.exec_driver_sql(f"ALTER TABLE pool_config OWNER TO {migrator}")
        conn.exec_driver_sql(f"ALTER TABLE conversation_chips OWNER TO {migrator}")
        conn.exec_driver_sql(f"ALTER TABLE chips OWNER TO {service}")
    before = state(engine)
    try:
        as_migrator = make_url(url).set(username=migrator).render_as_string(hide_password=False)
        with pytest.raises(adoption.AdoptionBlocked) as refused:
            migrate.upgrade(as_migrator)
        assert f"chips is owned by role {service}" in "\n".join(refused.value.details())
        assert state(engine) == before
    finally:
        with engine.begin() as conn:
            for role in (service, migrator):
                conn.exec_driver_sql(f"DROP OWNED BY {role}")
                conn.exec_driver_sql(f"DROP ROLE {role}")
