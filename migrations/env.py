"""Alembic environment: online migrations only, serialised by an advisory lock.

Two `chip-orchestrator migrate` started at once (two containers, say) take turns instead of
racing on the same DDL. An unversioned database where other services already created the shared
tables (chips, conversation_chips, pool_config) is adopted first (orchestrator/store/adoption/run.py:
what 0001 would have created is added around their rows) and stamped 0001; the later revisions
then run as usual, each in its own transaction, so no lock outlives its revision.
"""

from alembic import context
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool, text

from orchestrator.lock_keys import AdvisoryLock
from orchestrator.store.adoption import assess as adoption
from orchestrator.store.adoption import run as adoption_run

#: Fixed key for pg_advisory_lock; shared by every migrate run (orchestrator/lock_keys.py).
MIGRATION_LOCK_KEY = int(AdvisoryLock.MIGRATION)
#: What an adopted database is stamped with: orchestrator/store/adoption/baseline.py models this revision.
BASELINE_REVISION = "0001"

config = context.config
url = config.get_main_option("sqlalchemy.url")
options = config.attributes.get("adoption_options") or adoption_run.Options()
engine = create_engine(url, poolclass=pool.NullPool)


def _unversioned_with_shared_tables(connection) -> bool:
    current = MigrationContext.configure(connection).get_current_revision()
    found = current is None and bool(adoption.shared_tables_present(connection))
    connection.commit()  # hold no snapshot: CREATE INDEX CONCURRENTLY would wait for it
    return found


with engine.connect() as connection:
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    connection.commit()
    try:
        # DDL on a table other services write waits at most this long for its lock, then fails
        # and is retried (orchestrator.store.migrate): it never queues their writes behind a long
        # transaction.
        adoption_run.set_lock_timeout(connection, options.lock_timeout_ms, local=False)
        connection.commit()
        if _unversioned_with_shared_tables(connection):
            adoption_run.adopt(engine, options)
            with connection.begin():
                MigrationContext.configure(connection).stamp(context.script, BASELINE_REVISION)
        context.configure(
            connection=connection, transactional_ddl=True, transaction_per_migration=True
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.rollback()
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        connection.commit()
engine.dispose()
