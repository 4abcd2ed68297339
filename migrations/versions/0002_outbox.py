"""Outbox delivery state: per-message back-off, a lease instead of a transaction across Slack.

Revision ID: 0002_outbox
Revises: 0001
Create Date: 2026-12-02

Every new column has a default or is nullable, so other services' INSERTs keep working; adding a
column with a constant default (now() is evaluated once here) rewrites no row. Safe to run twice.
"""

from alembic import op

revision = "0002_outbox"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE notification_outbox
    ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS claimed_until   timestamptz,
    ADD COLUMN IF NOT EXISTS claimed_by      text,
    ADD COLUMN IF NOT EXISTS last_attempt_at timestamptz,
    ADD COLUMN IF NOT EXISTS last_error_code text;
-- The deliverer's scan: pending messages that are due, oldest first.
CREATE INDEX IF NOT EXISTS idx_notification_outbox_due
    ON notification_outbox (next_attempt_at, id) WHERE delivered_at IS NULL;
-- Pruning of old delivered messages and the "last delivered" metric.
CREATE INDEX IF NOT EXISTS idx_notification_outbox_delivered
    ON notification_outbox (delivered_at) WHERE delivered_at IS NOT NULL;
"""

DOWNGRADE = r"""
DROP INDEX IF EXISTS idx_notification_outbox_delivered;
DROP INDEX IF EXISTS idx_notification_outbox_due;
ALTER TABLE notification_outbox
    DROP COLUMN IF EXISTS last_error_code,
    DROP COLUMN IF EXISTS last_attempt_at,
    DROP COLUMN IF EXISTS claimed_by,
    DROP COLUMN IF EXISTS claimed_until,
    DROP COLUMN IF EXISTS next_attempt_at;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
