"""PostgreSQL: tables, the engine and its transactions, the SQL, the outbox, migrations."""
