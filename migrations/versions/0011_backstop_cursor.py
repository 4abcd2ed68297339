"""The stranded-conversations backstop's rotation: which slice of chip ids the next cycle reads.

Revision ID: 0011_backstop_cursor
Revises: 0010_webhook_clock
Create Date: 2027-01-06

One row. The cycle reads `position` in its snapshot and checks slice `position % slices` of the
chip-id space; after the cycle, its tidy step moves `position` on by one (compare-and-set, so two
overlapping cycles move it once). Consecutive cycles therefore read consecutive slices, and every
slice within `slices` cycles (orchestrator/services/cycle.py `_stranded`). A new table that only
this system writes: no lock on a table other services use. Safe to run twice.
"""

from alembic import op

revision = "0011_backstop_cursor"
down_revision = "0010_webhook_clock"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE IF NOT EXISTS backstop_cursor (
    id        smallint PRIMARY KEY DEFAULT 1,
    position  bigint NOT NULL DEFAULT 0,
    CONSTRAINT backstop_cursor_one_row CHECK (id = 1),
    CONSTRAINT backstop_cursor_position_not_negative CHECK (position >= 0)
);
COMMENT ON TABLE backstop_cursor IS
    'Fatia de ids de chips que o proximo ciclo verifica (conversas presas; rotacao)';
INSERT INTO backstop_cursor (id) VALUES (1) ON CONFLICT DO NOTHING;
"""

DOWNGRADE = """
DROP TABLE IF EXISTS backstop_cursor;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
