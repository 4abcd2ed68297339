"""Return to service: degraded chips fit to serve again go back to ready, in the cycle.

One transaction: the candidates locked (SKIP LOCKED), each re-checked by the pure rule
(domain/rehab.py) and moved degraded -> ready by compare-and-set, with one `rehabilitation`
operation and one message in #operacoes each. `degraded_at` is cleared (a ready chip with it set
is never taken: fit_ready_clauses), so the chip counts in the reserve and serves again.
"""

from __future__ import annotations

import sqlalchemy as sa

from orchestrator.domain import messages
from orchestrator.domain.rehab import PER_CYCLE, may_return
from orchestrator.errors import ConfigError
from orchestrator.services import growth
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction


def return_to_service(engine: sa.Engine, limit: int = PER_CYCLE) -> list[str]:
    """Move the degraded chips that may return to ready; returns their ids."""
    returned = []
    with transaction(engine) as conn:
        try:
            config = repo.load_config(conn)
        except ConfigError:
            return []  # the cycle alerts about the config itself
        now = repo.db_now(conn)
        for row in repo.rehab_candidates(conn, config, limit):
            chip = growth.view(row)
            if not may_return(
                chip, config, now, reason=row["reason"], drops_last_hour=row["drops"]
            ):
                continue
            minutes = int((now - chip.degraded_at).total_seconds() // 60)
            moved = repo.transition(
                conn, chip.id, ["degraded"], status="ready", ready_at=now, degraded_at=None
            )
            if moved is None:
                continue
            repo.record_operation(
                conn,
                "rehabilitation",
                chip.id,
                f"Apto de novo apos {minutes} min fora ({row['reason']})",
                metadata={
                    "motivo_da_troca": row["reason"],
                    "minutos_degradado": minutes,
                    "trust": chip.trust_score,
                },
            )
            outbox.enqueue(conn, "operacoes", messages.rehabilitated(row, row["reason"], minutes))
            returned.append(chip.id)
    return returned
