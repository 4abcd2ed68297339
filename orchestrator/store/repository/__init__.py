"""The SQL, by what it reads or writes; `repository.X` reaches every function (one import for use cases).

chips (one row, compare-and-set), counts (config, tally, active count, growth slots), candidates
(what a decision may pick), conversations (moves, stranded rows), operations (the log), history
(what capacity planning measures).
"""

from orchestrator.store.repository.candidates import (
    best_ready,
    cancellable_banned,
    fit_ready_clauses,
    fit_ready_exists,
    least_loaded_healthy_active,
    ready_ranked,
    serving_candidates,
    warming_candidates,
)
from orchestrator.store.repository.chips import (
    VIEW_COLUMNS,
    db_now,
    find_chip_id,
    get_chip,
    lock_if_serving,
    parse_chip_id,
    transition,
)
from orchestrator.store.repository.conversations import (
    active_conversations,
    chip_range,
    move_conversations,
    note_stranded,
    noted_stranded,
    noted_stranded_query,
    replacement_of,
    settle_stranded_notes,
    stranded_conversations,
    stranded_in_range,
    stranded_in_range_query,
)
from orchestrator.store.repository.counts import (
    active_trust_mean,
    compact_status_tally,
    count_active,
    count_active_disconnected,
    count_by_status,
    count_fit_ready,
    load_config,
    load_config_and_active,
    lock_growth_slots,
    purchases_last_day,
    status_counts,
    take_growth_slot,
)
from orchestrator.store.repository.history import (
    history_start,
    lead_time_days,
    replacements_by_reason,
    warmup_losses,
)
from orchestrator.store.repository.operations import (
    recent_operations,
    record_operation,
)
from orchestrator.store.repository.rehab import rehab_candidates
from orchestrator.store.repository.signals import (
    chip_by_salvy_id,
    chip_for_event,
    flap_threshold_and_drops,
    flapping_active,
    prune_disconnect_events,
    recent_drops,
    save_event_clock,
    set_connected,
)
from orchestrator.store.repository.tally_checks import (
    check_and_correct,
    tally_check_rows,
    tally_checked_at,
)

__all__ = [
    "VIEW_COLUMNS",
    "active_conversations",
    "active_trust_mean",
    "best_ready",
    "cancellable_banned",
    "check_and_correct",
    "chip_by_salvy_id",
    "chip_for_event",
    "chip_range",
    "compact_status_tally",
    "count_active",
    "count_active_disconnected",
    "count_by_status",
    "count_fit_ready",
    "db_now",
    "find_chip_id",
    "fit_ready_clauses",
    "fit_ready_exists",
    "flap_threshold_and_drops",
    "flapping_active",
    "get_chip",
    "history_start",
    "lead_time_days",
    "least_loaded_healthy_active",
    "load_config",
    "load_config_and_active",
    "lock_growth_slots",
    "lock_if_serving",
    "move_conversations",
    "note_stranded",
    "noted_stranded",
    "noted_stranded_query",
    "parse_chip_id",
    "prune_disconnect_events",
    "purchases_last_day",
    "ready_ranked",
    "recent_drops",
    "recent_operations",
    "record_operation",
    "rehab_candidates",
    "replacement_of",
    "replacements_by_reason",
    "save_event_clock",
    "serving_candidates",
    "set_connected",
    "settle_stranded_notes",
    "status_counts",
    "stranded_conversations",
    "stranded_in_range",
    "stranded_in_range_query",
    "take_growth_slot",
    "tally_check_rows",
    "tally_checked_at",
    "transition",
    "warming_candidates",
    "warmup_losses",
]
