"""Advisory-lock keys: every one in orchestrator/lock_keys.py, none shared by two guards."""

from __future__ import annotations

import pathlib
import re

from orchestrator.adapters import locks
from orchestrator.lock_keys import AdvisoryLock
from orchestrator.services import cycle_purchases, delivery

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: An advisory-lock call and its first argument, in Python or in SQL.
ADVISORY_CALL = re.compile(
    r"pg_(?:try_)?advisory_(?:xact_)?(?:un)?lock(?:_shared)?\)?\(\s*([^,)]*)"
)


def _migration_lock_key() -> int:
    text = (ROOT / "migrations" / "env.py").read_text()
    match = re.search(r"^MIGRATION_LOCK_KEY = (.+)$", text, re.MULTILINE)
    assert match, "migrations/env.py names its key"
    return int(eval(match.group(1), {"AdvisoryLock": AdvisoryLock, "int": int}))


def test_every_guard_has_a_key_of_its_own() -> None:
    # Given the key each guard takes, as its module declares it
    keys = {
        "migration": _migration_lock_key(),
        "purchases": cycle_purchases.PURCHASE_LOCK_KEY,
        "cycle guard": locks.CYCLE_GUARD_KEY,
        "delivery": delivery.DELIVERY_LOCK_KEY,
        "status tally": AdvisoryLock.STATUS_TALLY,
        "operation tally": AdvisoryLock.OPERATION_TALLY,
    }
    # Then no two share one, and each is the registry's
    assert len(set(keys.values())) == len(keys), keys
    assert set(keys.values()) == {int(k) for k in AdvisoryLock}


def test_no_module_or_migration_takes_a_key_the_registry_does_not_list() -> None:
    # Given every advisory-lock call in the code and the migrations
    sources = [
        *ROOT.joinpath("orchestrator").rglob("*.py"),
        *ROOT.joinpath("migrations").rglob("*.py"),
    ]
    literals, names = set(), set()
    for path in sources:
        for argument in ADVISORY_CALL.findall(path.read_text()):
            argument = argument.strip()
            if argument.replace("_", "").isdigit():
                literals.add(int(argument.replace("_", "")))
            elif argument:
                names.add(argument)
    # Then a literal key is one of the registry's (the tallies' SQL functions take theirs)
    assert literals <= {int(k) for k in AdvisoryLock}, literals
    assert {int(AdvisoryLock.STATUS_TALLY), int(AdvisoryLock.OPERATION_TALLY)} <= literals
    # And a named key is one of the modules' registry constants (or the migration's bind name)
    allowed = {"PURCHASE_LOCK_KEY", "CYCLE_GUARD_KEY", "DELIVERY_LOCK_KEY", ":k", "key"}
    assert names <= allowed, names - allowed
