"""Every PostgreSQL advisory-lock key this system takes, in one place, distinct by construction.

A leaf module, like errors.py and task_names.py. Locks that guard different things never share a
key: two guards on one key make unrelated work wait on each other (a Slack deliverer holding the
purchases' key for its whole run made every cycle's purchase step time out). `enum.unique`
refuses a duplicate value when this module is imported, and tests/app/test_lock_keys.py checks
that no other module or migration takes a key that is not listed here.
"""

from __future__ import annotations

import enum


@enum.unique
class AdvisoryLock(enum.IntEnum):
    """pg_advisory_lock / pg_advisory_xact_lock keys, one per thing guarded."""

    #: `chip-orchestrator migrate`: one migration run at a time (migrations/env.py).
    MIGRATION = 727_001
    #: The cycle's purchase decision: count in flight + insert intents (services/cycle_purchases.py).
    PURCHASES = 727_002
    #: The cycle guard: one cycle plans at a time (adapters/locks.py, session lock).
    CYCLE_GUARD = 727_003
    #: The notification deliverer: one at a time (services/delivery.py, session lock).
    DELIVERY = 727_004
    #: chip_status_tally compaction, resync, truncation (SQL functions of migration 0005).
    STATUS_TALLY = 727_005
    #: operation_tally compaction and resync (SQL functions of migration 0013).
    OPERATION_TALLY = 727_008
