"""domain/config_edit: `config set` text to pool_config values (pure)."""

from __future__ import annotations

from dataclasses import fields
from decimal import Decimal

import pytest

from orchestrator.domain import config_edit
from orchestrator.domain.config import PoolConfig
from orchestrator.errors import Rejected


def test_every_pool_config_setting_has_its_columns_name_in_the_tables_order() -> None:
    assert config_edit.NAMES == (
        "producao_min",
        "producao_max",
        "ready_min",
        "warmup_buffer",
        "warmup_days",
        "trust_min_for_ready",
        "trust_degraded_threshold",
        "auto_provision",
        "default_ddd",
        "max_provisions_per_cycle",
        "disconnect_grace_minutes",
        "replace_storm_fraction",
        "auto_cancel_banned",
        "alert_cooldown_minutes",
        "flap_max_per_hour",
        "number_monthly_cost",
        "service_level",
        "auto_size",
        "max_purchases_per_day",
        "rehab_after_minutes",
    )
    assert set(config_edit.NULLABLE) == {
        f.name for f in fields(PoolConfig) if "None" in str(f.type)
    }


def test_each_value_is_parsed_to_its_columns_type() -> None:
    parsed = config_edit.parse_assignments(
        [
            "producao_min=12",
            "trust_min_for_ready=87.5",
            "auto_size=ON",
            "auto_provision=false",
            "number_monthly_cost=29.90",
            "max_purchases_per_day=null",
            " rehab_after_minutes = 15 ",
        ]
    )
    assert parsed == {
        "producao_min": 12,
        "trust_min_for_ready": 87.5,
        "auto_size": True,
        "auto_provision": False,
        "number_monthly_cost": Decimal("29.90"),
        "max_purchases_per_day": None,
        "rehab_after_minutes": 15,
    }
    assert isinstance(parsed["trust_min_for_ready"], float)
    assert type(parsed["producao_min"]) is int


@pytest.mark.parametrize(
    ("pair", "says"),
    [
        ("warmup_days=2.5", "not an integer"),
        ("service_level=high", "not a number"),
        ("service_level=inf", "not a finite number"),
        ("auto_size=yes", "not true, false, on or off"),
        ("auto_size=null", "auto_size cannot be NULL"),
        ("number_monthly_cost=abc", "not an amount in BRL"),
        ("number_monthly_cost=1e11", "not an amount below"),
        ("number_monthly_cost=0.001", "at most 2 decimal places"),
        ("ready_min=2147483648", "out of range for an integer column"),
        ("=3", "is not NAME=VALUE"),
        ("nope=3", "unknown setting 'nope'"),
    ],
)
def test_a_bad_pair_is_refused_naming_it(pair: str, says: str) -> None:
    with pytest.raises(Rejected) as refused:
        config_edit.parse_assignments([pair])
    assert says in refused.value.reason
    assert "\n" not in refused.value.reason


def test_nothing_to_set_is_refused() -> None:
    with pytest.raises(Rejected, match="nothing to set"):
        config_edit.parse_assignments([])


def test_changes_keep_only_what_differs_and_metadata_is_plain_json() -> None:
    current = {"producao_min": 10, "number_monthly_cost": Decimal("29.90"), "auto_size": False}
    wanted = {"producao_min": 10, "number_monthly_cost": Decimal("29.9"), "auto_size": True}
    assert config_edit.changes(current, wanted) == {"auto_size": True}
    after = {**current, "number_monthly_cost": Decimal("31.00")}
    assert config_edit.before_after(current, after, ["number_monthly_cost"]) == {
        "antes": {"number_monthly_cost": 29.9},
        "depois": {"number_monthly_cost": 31.0},
    }
