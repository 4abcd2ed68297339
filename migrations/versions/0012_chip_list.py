"""`chip-orchestrator chips`: an index that lists chips by status, DDD and phone, a page at a time.

Revision ID: 0012_chip_list
Revises: 0011_backstop_cursor
Create Date: 2027-01-08

`idx_chips_status_ddd_telefone` (status, ddd, telefone): each status's page is an ordered range
of it, cut at what the page still needs, with or without `--ddd`. Without it a page of a common
status, or of one DDD, sorts every chip of that status (1M chips: up to 2.8 s; with it, under
10 ms; docs/benchmarks.md). About 47 MB at 1M chips; the columns it holds seldom change (a status
change already updated idx_chips_status). Built CONCURRENTLY, outside a transaction: other
services' writes never wait for it. Safe to run twice.
"""

from alembic import op

revision = "0012_chip_list"
down_revision = "0011_backstop_cursor"
branch_labels = None
depends_on = None

#: Outside a transaction: CONCURRENTLY takes no lock that other services' writes wait on. A
#: build that failed half-way leaves an INVALID index, which IF NOT EXISTS would keep: drop it.
INDEX = (
    """
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE c.relname = 'idx_chips_status_ddd_telefone' AND NOT i.indisvalid) THEN
        DROP INDEX idx_chips_status_ddd_telefone;
    END IF;
END $$
""",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_chips_status_ddd_telefone"
    " ON chips (status, ddd, telefone)",
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for statement in INDEX:
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_chips_status_ddd_telefone")
