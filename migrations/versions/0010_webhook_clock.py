"""Webhooks: each chip's gateway clock offset, so events are ordered without trusting its clock.

Revision ID: 0010_webhook_clock
Revises: 0009_reserve
Create Date: 2027-01-05

Evolution API stamps `date_time` with its server's local wall clock labelled `Z`: hours off UTC
on a server outside UTC, or absent. `chip_webhook_state.last_event_at` now holds the newest
applied event's time on OUR clock, and `clock_offset` the offset from the chip's gateway clock to
ours (our receive time - `date_time`, the smallest seen); domain/event_clock.py places each event
with them. A row written before this revision holds a sender's `date_time`, maybe hours ahead of
ours: it is brought back to now at most (an event after it is then never held back as older), and
its offset is learned from the next event. Only this table of ours changes. Safe to run twice.
"""

from alembic import op

revision = "0010_webhook_clock"
down_revision = "0009_reserve"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE chip_webhook_state ADD COLUMN IF NOT EXISTS clock_offset interval;
COMMENT ON COLUMN chip_webhook_state.last_event_at IS
    'Hora (no nosso relogio) do evento mais recente do gateway aplicado ao chip';
COMMENT ON COLUMN chip_webhook_state.clock_offset IS
    'Nosso relogio menos o relogio do gateway (date_time), o menor visto; NULL: ainda desconhecido';
UPDATE chip_webhook_state SET last_event_at = now()
 WHERE clock_offset IS NULL AND last_event_at > now();
"""

DOWNGRADE = """
ALTER TABLE chip_webhook_state DROP COLUMN IF EXISTS clock_offset;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
