"""What the command line says: no internal names, units on numbers, defaults in --help, and one
name for a replacement recorded without a reason."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa

from orchestrator.app.settings import ROOT
from tests.ops.cli.conftest import Cli
from tests.support.history import make_history


def run(*args: str) -> subprocess.CompletedProcess:
    """The CLI with no database: argparse answers before any is needed."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("forecast", "--window-days", "abc"), "argument --window-days: not a whole number: 'abc'"),
        (("forecast", "--service-level", "high"), "argument --service-level: not a number: 'high'"),
        (("simulate", "--days", "2.5"), "argument --days: not a whole number: '2.5'"),
        (("simulate", "--ban-rate", "x"), "argument --ban-rate: not a number: 'x'"),
        (("simulate", "--warmup-loss", "y"), "argument --warmup-loss: not a number: 'y'"),
    ],
)
def test_a_value_of_the_wrong_kind_is_named_without_an_internal_function_name(
    args: tuple[str, ...], says: str
) -> None:
    # When a planning flag gets a value that is not a number
    out = run(*args)
    # Then one line names the flag and the value, and no function of ours
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert line == f"chip-orchestrator {args[0]}: {says}"
    assert "invalid" not in line and "_" not in line.split(":", 2)[2]


def test_webhooks_help_shows_where_it_listens_by_default() -> None:
    out = run("webhooks", "--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "--host HOST address to listen on (default: 127.0.0.1)" in text
    assert "--port PORT TCP port to listen on (default: 8080)" in text


@pytest.mark.db
def test_forecast_says_its_history_in_days(clean_db: sa.Engine, cli: Cli) -> None:
    # Given about 30 days of history
    make_history(clean_db, days=30, per_day=2, buy_days=30)
    days = json.loads(cli("forecast", "--json").stdout)["history_days"]
    assert days > 1
    # When the forecast is printed as a table
    out = cli("forecast", "--window-days", "60", COLUMNS="160")
    # Then its title gives the history with its unit
    assert out.returncode == 0, out.stderr
    assert f"Forecast: last 60 days ({days} days of history)" in out.stdout


@pytest.mark.db
def test_a_replacement_without_a_reason_has_one_name_in_report_and_forecast(
    clean_db: sa.Engine, cli: Cli
) -> None:
    # Given 90 days of replacements, every other one recorded without a reason
    history = make_history(clean_db, days=90, per_day=2, reasons=("low_trust", None))
    month = (history["now"] - timedelta(days=15)).strftime("%Y-%m")
    # When ops read a month's report and the forecast
    report = cli("report", "--month", month, "--json")
    forecast = cli("forecast", "--json")
    # Then both name the reason-less ones sem_motivo
    assert report.returncode == 0 and forecast.returncode == 0, report.stderr + forecast.stderr
    assert set(json.loads(report.stdout)["replaced"]["by_reason"]) == {"low_trust", "sem_motivo"}
    assert set(json.loads(forecast.stdout)["by_reason"]) == {"low_trust", "sem_motivo"}
    # and so does the report's table
    table = cli("report", "--month", month, COLUMNS="140")
    assert "motivo: sem_motivo" in table.stdout
