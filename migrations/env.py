"""Alembic environment: online migrations only, serialised by an advisory lock.

Two `chip-orchestrator migrate` started at once (two containers, say) take turns instead of
racing on the same DDL.
"""

from alembic import context
from sqlalchemy import create_engine, pool, text

#: Arbitrary, fixed key for pg_advisory_lock; shared by every migrate run.
MIGRATION_LOCK_KEY = 727_001

config = context.config
url = config.get_main_option("sqlalchemy.url")
engine = create_engine(url, poolclass=pool.NullPool)

with engine.connect() as connection:
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    connection.commit()
    try:
        context.configure(connection=connection, transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        connection.commit()
engine.dispose()
