"""The disconnection trigger, planned: its function, the trigger, and a backfill of chips
already disconnected before adoption (so their grace period starts now, not never)."""

from __future__ import annotations

from orchestrator.store.adoption import baseline
from orchestrator.store.adoption.model import LOCKED, ONLINE, Catalog, Plan, Step


def plan_trigger(out: Plan, cat: Catalog) -> None:
    """Steps for what is missing of the trigger, and the backfill unless nothing needs it."""
    if "chips" not in cat.tables:
        return
    if not cat.has_function:
        out.steps.append(
            Step(
                LOCKED,
                "chips",
                "create function chips_track_disconnection()",
                baseline.FUNCTION_DDL,
                "DROP FUNCTION IF EXISTS chips_track_disconnection()",
            )
        )
    if not cat.has_trigger:
        out.steps.append(
            Step(
                LOCKED,
                "chips",
                "create trigger chips_track_disconnection (records since when a chip is disconnected)",
                baseline.TRIGGER_DDL,
                "DROP TRIGGER IF EXISTS chips_track_disconnection ON chips",
            )
        )
    if cat.unrecorded_disconnections != 0:
        # Chips already disconnected: since "at least now". Online, after the trigger exists, so
        # no flip is missed; it writes only the new column (and, through the trigger, updated_at).
        out.steps.append(
            Step(
                ONLINE,
                "chips",
                "record evolution_disconnected_at = now() for chips disconnected before adoption",
                BACKFILL_DISCONNECTED,
            )
        )


#: In slices of BACKFILL_PAGES pages (a TID range scan each), each committed on its own: a row
#: another service flips waits for one slice (milliseconds), not for the whole table.
BACKFILL_PAGES = 500
BACKFILL_DISCONNECTED = f"""
DO $$
DECLARE
    pages bigint := pg_relation_size('chips') / current_setting('block_size')::int;
    low bigint := 0;
BEGIN
    WHILE low <= pages LOOP
        UPDATE chips SET evolution_disconnected_at = now()
         WHERE ctid >= ('(' || low || ',0)')::tid
           AND ctid < ('(' || (low + {BACKFILL_PAGES}) || ',0)')::tid
           AND NOT evolution_connected AND evolution_disconnected_at IS NULL;
        COMMIT;
        low := low + {BACKFILL_PAGES};
    END LOOP;
END $$"""
