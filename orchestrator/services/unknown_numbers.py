"""Numbers Salvy bills us for that match no chip: reported to ops once each, never cancelled."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from orchestrator.adapters.salvy import SalvyNumber
from orchestrator.domain import messages
from orchestrator.store import outbox
from orchestrator.store.db import transaction
from orchestrator.store.schema import chips


def report_unknown(engine: sa.Engine, numbers: Sequence[SalvyNumber]) -> int:
    """Alert ops (once per number) about live Salvy numbers that match no chip; never cancel them.

    A number is ours when a chip holds its salvy_id, or when it carries the name of a purchase
    still in flight (`provisioning`). Anything else is billed without serving: a second number
    under one name included.
    """
    live = [n for n in numbers if n.status in ("active", "pending", "blocked")]
    if not live:
        return 0
    with transaction(engine) as conn:
        known = set(
            conn.execute(
                sa.select(chips.c.salvy_id).where(chips.c.salvy_id.in_([n.id for n in live]))
            ).scalars()
        )
        in_flight = set(
            conn.execute(
                sa.select(chips.c.provisioning_name).where(
                    chips.c.status == "provisioning",
                    chips.c.provisioning_name.in_([n.name for n in live if n.name]),
                )
            ).scalars()
        )
        unknown = [n for n in live if n.id not in known and n.name not in in_flight]
        fresh = [n for n in unknown if outbox.claim(conn, f"salvy_unknown:{n.id}")]
        if fresh:
            outbox.enqueue(
                conn, "alertas", messages.unknown_salvy_numbers([n.phone_number for n in fresh])
            )
    return len(unknown)
