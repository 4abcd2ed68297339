"""`config set NAME=VALUE ...`: text to pool_config values, and which values a change changes.

Pure. Each value is parsed to its column's type (integer, float, boolean, NULL where the column
allows it) and kept inside what the column can hold, so the database is only asked to judge the
values themselves (its CHECK constraints) and never fails on a type or an overflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from decimal import Decimal, InvalidOperation

from orchestrator.domain.config import PoolConfig
from orchestrator.errors import Rejected

#: pool_config's settings, in the table's order (every PoolConfig field is a column).
NAMES = tuple(f.name for f in fields(PoolConfig))
#: Columns that may be NULL, and what NULL means there.
NULLABLE = {
    "number_monthly_cost": "cost unknown",
    "max_purchases_per_day": "no cap",
    "rehab_after_minutes": "never",
}
#: Words a boolean accepts (any case).
TRUE_WORDS, FALSE_WORDS = ("true", "on"), ("false", "off")
#: What an `integer` column holds.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
#: number_monthly_cost is numeric(12, 2): BRL with cents, below 10^10.
COST_MAX = Decimal("9999999999.99")
#: Columns of PostgreSQL type numeric(12, 2) (read back as Decimal).
DECIMAL_COLUMNS = ("number_monthly_cost",)

_KINDS = {f.name: str(f.type).replace(" | None", "") for f in fields(PoolConfig)}


def parse_assignments(pairs: Sequence[str]) -> dict[str, object]:
    """NAME=VALUE pairs -> {column: typed value}; Rejected (one line) at the first bad pair."""
    if not pairs:
        raise Rejected("config set: nothing to set (give NAME=VALUE ...)", code="malformed")
    values: dict[str, object] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name:
            raise Rejected(f"config set: {pair[:64]!r} is not NAME=VALUE", code="malformed")
        if name not in _KINDS:
            raise Rejected(
                f"config set: unknown setting {name[:64]!r} (known: {', '.join(NAMES)})",
                code="malformed",
            )
        if name in values:
            raise Rejected(f"config set: {name} given twice", code="malformed")
        values[name] = parse_value(name, raw)
    return values


def parse_value(name: str, raw: str) -> object:
    """One setting's text as its column's type; Rejected naming the setting when it is not."""
    shown = f"config set {name}={raw[:32]}"
    if raw.lower() == "null":
        if name not in NULLABLE:
            raise Rejected(f"{shown}: {name} cannot be NULL", code="malformed")
        return None
    kind = _KINDS[name]
    if kind == "bool":
        if raw.lower() not in TRUE_WORDS + FALSE_WORDS:
            raise Rejected(f"{shown}: not true, false, on or off", code="malformed")
        return raw.lower() in TRUE_WORDS
    if name in DECIMAL_COLUMNS:
        return _money(shown, raw)
    if kind == "int":
        return _integer(shown, raw)
    return _float(shown, raw)


def _integer(shown: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise Rejected(f"{shown}: not an integer", code="malformed") from None
    if not INT_MIN <= value <= INT_MAX:
        raise Rejected(f"{shown}: out of range for an integer column", code="malformed")
    return value


def _float(shown: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise Rejected(f"{shown}: not a number", code="malformed") from None
    if not math.isfinite(value):
        raise Rejected(f"{shown}: not a finite number", code="malformed")
    return value


def _money(shown: str, raw: str) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise Rejected(f"{shown}: not an amount in BRL (e.g. 12.50)", code="malformed") from None
    if not value.is_finite() or abs(value) > COST_MAX:
        raise Rejected(f"{shown}: not an amount below 10000000000 BRL", code="malformed")
    if value != value.quantize(Decimal("0.01")):
        raise Rejected(f"{shown}: at most 2 decimal places (cents)", code="malformed")
    return value


def changes(current: Mapping[str, object], wanted: Mapping[str, object]) -> dict[str, object]:
    """The wanted values that differ from the current row (an empty dict: nothing to change)."""
    return {name: value for name, value in wanted.items() if current[name] != value}


def plain(value: object) -> object:
    """A column's value as JSON holds it (numeric -> float)."""
    return float(value) if isinstance(value, Decimal) else value


def before_after(
    before: Mapping[str, object], after: Mapping[str, object], names: Sequence[str]
) -> dict[str, dict[str, object]]:
    """{"antes": {...}, "depois": {...}} of the named columns: the operation's metadata."""
    return {
        "antes": {name: plain(before[name]) for name in names},
        "depois": {name: plain(after[name]) for name in names},
    }
