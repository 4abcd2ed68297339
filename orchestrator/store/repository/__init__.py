"""The SQL, by what it reads or writes; `repository.X` reaches every function (one import for use cases).

chips (one row, compare-and-set), counts (config, tally, active count, growth slots), candidates
(what a decision may pick), conversations (moves, stranded rows), operations (the log and its
tally), history
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
    load_config,
    load_config_and_active,
    lock_growth_slots,
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
    compact_operation_tally,
    operation_counts,
    recent_operations,
    record_operation,
)
from orchestrator.store.repository.signals import (
    chip_by_salvy_id,
    claim_instance_event,
    flap_threshold_and_drops,
    flapping_active,
    prune_disconnect_events,
    recent_drops,
    set_connected,
)

__all__ = [
    "VIEW_COLUMNS",
    "active_conversations",
    "active_trust_mean",
    "best_ready",
    "cancellable_banned",
    "chip_by_salvy_id",
    "chip_range",
    "claim_instance_event",
    "compact_operation_tally",
    "compact_status_tally",
    "count_active",
    "count_active_disconnected",
    "count_by_status",
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
    "operation_counts",
    "parse_chip_id",
    "prune_disconnect_events",
    "ready_ranked",
    "recent_drops",
    "recent_operations",
    "record_operation",
    "replacement_of",
    "replacements_by_reason",
    "serving_candidates",
    "set_connected",
    "settle_stranded_notes",
    "status_counts",
    "stranded_conversations",
    "stranded_in_range",
    "stranded_in_range_query",
    "take_growth_slot",
    "transition",
    "warming_candidates",
    "warmup_losses",
]
