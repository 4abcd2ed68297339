"""`forecast` and `simulate` run as a user runs them (subprocess, real database)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.factories import make_chip, set_config
from tests.ops.cli.conftest import Cli
from tests.support.history import make_history

pytestmark = pytest.mark.db

#: SPEC "Capacity planning": forecast --json keys.
FORECAST_KEYS = {
    "window_days",
    "history_days",
    "replacements_per_day",
    "by_reason",
    "warmup_loss_rate",
    "lead_time_days",
    "service_level",
    "recommended",
    "current",
}


def no_database(tmp_path: Path) -> dict[str, str]:
    """A shell with no database configured and no embedded server to fall back on."""
    return {
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "ORCHESTRATOR_EMBEDDED": "0",
        "ORCHESTRATOR_DATA_DIR": str(tmp_path),
    }


def run_json(cli: Cli, *args: str, **env: str) -> dict:
    out = cli(*args, "--json", **env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_forecast_json_has_the_spec_keys_and_the_measured_numbers(
    clean_db: sa.Engine, cli: Cli
) -> None:
    # Given 60 days of 4 replacements a day, ready 23 days after purchase, 1 in 10 lost
    make_history(clean_db, days=60, per_day=4, lead_days=23, lost_every=10)
    # When ops ask for the forecast at 99%
    data = run_json(cli, "forecast", "--service-level", "0.99", "--window-days", "60")
    # Then every key of the contract is there, with the measured numbers
    assert set(data) >= FORECAST_KEYS
    assert set(data["recommended"]) == {"warmup_buffer", "ready_min"}
    assert set(data["current"]) == {"warmup_buffer", "ready_min", "p_no_ready"}
    assert data["window_days"] == 60 and data["service_level"] == 0.99
    assert data["replacements_per_day"] == pytest.approx(4, rel=0.02)
    assert data["lead_time_days"] == pytest.approx(23, abs=0.1)
    assert data["recommended"]["warmup_buffer"] >= 92 / 0.9
    assert 0.9 < data["current"]["p_no_ready"] <= 1
    # a 10% loss is planned as measured, not flagged
    assert data["warmup_loss_flagged"] is False
    assert data["warmup_loss_planned"] == pytest.approx(data["warmup_loss_rate"], abs=1e-4)
    # and the table says the same
    text = cli("forecast")
    assert text.returncode == 0, text.stderr
    assert "recommended" in text.stdout and "4.00" in text.stdout


def test_forecast_with_no_history_says_so_and_invents_nothing(
    clean_db: sa.Engine, cli: Cli
) -> None:
    data = run_json(cli, "forecast")
    assert data["history_days"] == 0
    assert data["replacements_per_day"] is None
    assert data["recommended"] == {"warmup_buffer": None, "ready_min": None}
    assert data["current"] == {"warmup_buffer": 10, "ready_min": 3, "p_no_ready": None}
    text = cli("forecast")
    assert "too little history" in " ".join(text.stdout.split())


def test_simulate_without_a_database_uses_the_defaults_and_is_deterministic(
    cli: Cli, tmp_path: Path
) -> None:
    env = no_database(tmp_path)
    args = ("simulate", "--days", "60", "--ban-rate", "0.05", "--seed", "4")
    first, again = run_json(cli, *args, **env), run_json(cli, *args, **env)
    assert first == again
    assert "no database configured" in first["notes"][0]
    assert first["current"]["warmup_buffer"] == 10  # PoolConfig's default
    assert first["recommended"]["warmup_buffer"] == 11  # ceil(0.05 * 10 * 21)
    assert len(first["current"]["production"]) == 60
    assert first["current"]["cost"] is None  # number_monthly_cost unknown
    assert first["random_seed"] == 4
    other = run_json(cli, *args[:-1], "5", **env)
    assert other["current"] != first["current"]


#: SPEC "Capacity planning": simulate --json keys per run.
RUN_KEYS = {
    "days_below_min",
    "lowest_production",
    "bought",
    "cancelled",
    "number_months",
    "cost",
    "production",
    "ready",
    "warming",
}


def test_simulate_compares_the_seed_rule_ours_and_the_recommendation_with_cancel_banned(
    cli: Cli, tmp_path: Path
) -> None:
    # Given 100 active chips banned at 0.01 a day each, a number at 20 BRL a month
    data = run_json(
        cli,
        *("simulate", "--days", "90", "--ban-rate", "0.01", "--seed", "1"),
        *("--set", "producao_min=100", "--set", "producao_max=120"),
        *("--set", "ready_min=10", "--set", "warmup_buffer=30"),
        *("--set", "number_monthly_cost=20"),
        **no_database(tmp_path),
    )
    runs = ("seed", "current", "recommended", "recommended_cancel_banned")
    # Then each run has the contract's keys and idle ready chip-days
    for run in runs:
        assert set(data[run]) >= RUN_KEYS | {"idle_ready_days"}, run
        assert len(data[run]["ready"]) == 90
        assert data[run]["cost"] == data[run]["number_months"] * 20
    assert [data[run]["rule"] for run in runs] == ["seed", "reserve", "reserve", "reserve"]
    # the seed's rule on 30 warming delivers 30 / 21 = 1.43 chips a day against 1 consumed:
    # its ready tier climbs, ours holds the same config's reserve at 40
    assert data["seed"]["ready"][-1] > data["current"]["ready"][-1]
    assert data["seed"]["idle_ready_days"] > data["current"]["idle_ready_days"]
    assert data["seed"]["bought"] > data["current"]["bought"]
    assert max(data["current"]["ready"]) <= 40
    # the recommendation is 21 / 9 (a reserve of 30 for one ban a day over 21 days)
    assert (data["recommended"]["warmup_buffer"], data["recommended"]["ready_min"]) == (21, 9)
    # and cancelling banned numbers bills fewer number-months for the same service
    cancel, rec = data["recommended_cancel_banned"], data["recommended"]
    assert cancel["production"] == rec["production"]
    assert cancel["cancelled"] > 0 and cancel["number_months"] < rec["number_months"]
    # and the table shows the four runs
    text = cli(*("simulate", "--days", "30", "--ban-rate", "0.01"), **no_database(tmp_path)).stdout
    assert "seed's rule" in text and "idle ready chip-days" in text and "+ cancel" in text


def test_simulate_starts_from_the_database_pool_and_its_config(
    clean_db: sa.Engine, cli: Cli
) -> None:
    # Given a pool of 2 active chips and a config with a known cost
    set_config(clean_db, producao_min=2, producao_max=4, number_monthly_cost=19.9)
    make_chip(clean_db, "active")
    make_chip(clean_db, "active")
    # When it is simulated for 30 days without bans, with one override
    data = run_json(cli, "simulate", "--days", "30", "--ban-rate", "0", "--set", "warmup_buffer=4")
    # Then the run starts from those chips, with the override and the stored cost
    assert "2 active, 0 ready, 0 warming" in data["notes"][0]
    assert data["current"]["warmup_buffer"] == 4
    assert data["current"]["production"] == [2] * 30
    # the empty reserve (target ready_min 3 + warmup_buffer 4 = 7) is filled on day 0, three
    # a cycle (3 + 3 + 1); those 7 are ready on day 21 and the reserve, all ready, holds 7
    assert data["current"]["bought"] == 7
    assert data["current"]["ready"][-1] == 7
    # and 9 numbers (2 active + 7 bought) were each billed one month
    assert data["current"]["cost"] == pytest.approx(19.9 * 9)
    # while the seed's rule bought 4 on day 0 and 4 more when those became ready on day 21
    assert data["seed"]["bought"] == 8
    assert data["seed"]["ready"][-1] == 4
    assert data["seed"]["cost"] == pytest.approx(19.9 * 10)


def test_simulate_from_history_uses_the_measured_rate(clean_db: sa.Engine, cli: Cli) -> None:
    make_history(clean_db, days=30, per_day=2, buy_days=30)
    data = run_json(cli, "simulate", "--from-history", "--days", "20")
    assert data["rate_from"] == "history"
    assert data["ban_rate"] == pytest.approx(2 / 10, rel=0.05)  # 2 a day over producao_min 10
    assert data["warmup_loss"] == pytest.approx(0.1, abs=0.05)


def test_simulate_plot_writes_a_png(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "whatif.png"
    out = cli(
        "simulate",
        "--days",
        "30",
        "--ban-rate",
        "0.1",
        "--plot",
        str(target),
        **no_database(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    assert target.stat().st_size > 10_000
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_status_and_plan_json_say_what_auto_size_did(clean_db: sa.Engine, cli: Cli) -> None:
    make_history(clean_db, days=30, per_day=1, buys_per_day=0.5, buy_days=40)
    set_config(clean_db, auto_size=True)
    status = run_json(cli, "status")
    plan = run_json(cli, "plan")
    assert status["auto_size"]["on"] is True
    assert status["auto_size"]["recommended"]["warmup_buffer"] >= 21
    assert plan["status"]["auto_size"] == status["auto_size"]
    assert status["warming"]["buffer"] == status["auto_size"]["used"]["warmup_buffer"]
    # and the table says so under the counts
    text = " ".join(cli("status").stdout.split())
    used = status["auto_size"]["used"]["warmup_buffer"]
    assert f"auto_size: warmup_buffer {used} (configured 10, recommended {used})" in text


@pytest.mark.parametrize(
    "args",
    [
        ("forecast", "--service-level", "2"),
        ("forecast", "--service-level", "x"),
        ("forecast", "--window-days", "0"),
        ("simulate", "--set", "nonsense=1"),
        ("simulate", "--set", "warmup_buffer=many"),
        ("simulate", "--set", "auto_size=maybe"),
        ("simulate", "--set", "producao_min=99"),
        ("simulate", "--set", "warmup_buffer"),
        ("simulate", "--ban-rate", "-1"),
        ("simulate", "--ban-rate", "1", "--from-history"),
        ("simulate", "--from-history"),
        ("simulate", "--days", "0"),
        ("simulate", "--warmup-loss", "1"),
        ("simulate", "--cycles-per-day", "7"),
        ("simulate", "--plot", "/nonexistent/dir/whatif.png"),
    ],
)
def test_every_planning_error_is_one_line_and_a_non_zero_exit(
    clean_db: sa.Engine, cli: Cli, args: tuple[str, ...]
) -> None:
    out = cli(*args)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("chip-orchestrator")
    assert "Traceback" not in out.stderr


def test_from_history_without_a_database_is_one_line(cli: Cli, tmp_path: Path) -> None:
    out = cli("simulate", "--from-history", **no_database(tmp_path))
    assert out.returncode == 2
    assert (
        out.stderr.strip() == "chip-orchestrator: --from-history needs a database: set DATABASE_URL"
    )
