"""A seed-era database: the tables other services created from the seed document, with rows.

The columns are the ones the seed's code reads and writes (docs: /work/shared/seed, stories 1.1 to
1.6): `chips` without our constraints (integer trust_score, text status, telefone not unique),
`conversation_chips` with only the seed's columns, `pool_config` with `id serial` and integer
thresholds, and optionally `orchestrator_operations` exactly as the seed's migration wrote it.
"""

from __future__ import annotations

import sqlalchemy as sa

#: What the seed's code touches; `rich` adds what a Supabase table usually also has.
CHIPS = """
CREATE TABLE chips (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    telefone               text,
    instance_name          text,
    status                 text DEFAULT 'warming',
    trust_score            integer DEFAULT 50,
    trust_level            text,
    fase_warmup            text,
    warming_started_at     timestamptz,
    ready_at               timestamptz,
    promoted_to_active_at  timestamptz,
    evolution_connected    boolean DEFAULT true,
    msgs_enviadas_hoje     integer DEFAULT 0{rich}
)"""

RICH_CHIPS = """,
    ddd                    integer,
    salvy_id               text,
    created_at             timestamptz DEFAULT now(),
    updated_at             timestamptz DEFAULT now()"""

CONVERSATIONS = """
CREATE TABLE conversation_chips (
    id               {id_type},
    conversation_id  text NOT NULL,
    chip_id          uuid {fk},
    active           boolean DEFAULT true,
    migrated_at      timestamptz,
    migrated_from    uuid
)"""

POOL_CONFIG = """
CREATE TABLE pool_config (
    id                        SERIAL PRIMARY KEY,
    producao_min              integer DEFAULT 10,
    producao_max              integer DEFAULT 20,
    ready_min                 integer DEFAULT 3,
    warmup_buffer             integer DEFAULT 10,
    warmup_days               integer DEFAULT 21,
    trust_min_for_ready       integer DEFAULT 85,
    trust_degraded_threshold  integer DEFAULT 60,
    auto_provision            boolean DEFAULT true,
    default_ddd               integer DEFAULT 11
)"""

# Story 1.6, verbatim.
OPERATIONS = """
CREATE TABLE orchestrator_operations (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    operacao TEXT NOT NULL CHECK (operacao IN (
        'auto_replace', 'auto_provision', 'promotion_warming_ready', 'promotion_ready_active',
        'demotion', 'migration', 'cancel'
    )),
    chip_id UUID REFERENCES chips(id),
    chip_destino_id UUID REFERENCES chips(id),
    motivo TEXT,
    metadata JSONB DEFAULT '{}',
    sucesso BOOLEAN DEFAULT true,
    erro TEXT,
    created_at TIMESTAMPTZ DEFAULT now()
);
CREATE INDEX idx_orchestrator_ops_chip ON orchestrator_operations(chip_id, created_at DESC);
CREATE INDEX idx_orchestrator_ops_tipo ON orchestrator_operations(operacao, created_at DESC);
CREATE INDEX idx_orchestrator_ops_time ON orchestrator_operations(created_at DESC);
COMMENT ON TABLE orchestrator_operations IS 'Historico de operacoes do Orchestrator'
"""

STATUSES = ("warming", "ready", "active", "degraded", "banned")

#: Set-based rows: g-th chip's status, integer trust 0..100, 2% disconnected.
CHIP_ROWS = """
INSERT INTO chips (telefone, instance_name, status, trust_score, trust_level, fase_warmup,
                   warming_started_at, ready_at, promoted_to_active_at, evolution_connected,
                   msgs_enviadas_hoje)
SELECT '+55' || (11 + g % 89) || '9' || lpad(g::text, 8, '0'), 'inst-' || g, s,
       CASE WHEN s = 'ready' THEN 85 + g % 16 ELSE (g * 37) % 101 END,
       'nivel-' || (g % 5), CASE WHEN g % 3 = 0 THEN 'expansao' ELSE 'operacao' END,
       now() - make_interval(days => 10 + g % 30),
       CASE WHEN s IN ('ready', 'active', 'degraded') THEN now() - interval '3 days' END,
       CASE WHEN s IN ('active', 'degraded') THEN now() - interval '2 days' END,
       g % 50 <> 7, g % 200
FROM (SELECT g, (ARRAY['warming', 'ready', 'active', 'active', 'degraded', 'banned'])[1 + g % 6] AS s
      FROM generate_series(1, :n) AS g) AS gen
"""

CONVERSATION_ROWS = """
INSERT INTO conversation_chips (conversation_id, chip_id, active)
SELECT 'conv-' || c.n || '-' || k, c.id, k = 1
FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM chips
      WHERE status = 'active' LIMIT :chips) AS c
CROSS JOIN generate_series(1, :per_chip) AS k
"""

#: The columns of each seed table the seed's code reads or writes (compared before and after).
SEED_COLUMNS = {
    "chips": (
        "id",
        "telefone",
        "instance_name",
        "status",
        "trust_score",
        "trust_level",
        "fase_warmup",
        "warming_started_at",
        "ready_at",
        "promoted_to_active_at",
        "evolution_connected",
        "msgs_enviadas_hoje",
    ),
    "conversation_chips": (
        "id",
        "conversation_id",
        "chip_id",
        "active",
        "migrated_at",
        "migrated_from",
    ),
    "pool_config": (
        "id",
        "producao_min",
        "producao_max",
        "ready_min",
        "warmup_buffer",
        "warmup_days",
        "trust_min_for_ready",
        "trust_degraded_threshold",
        "auto_provision",
        "default_ddd",
    ),
}


def create_seed_schema(
    conn: sa.Connection, *, operations: bool = False, rich: bool = False, serial_ids: bool = False
) -> None:
    """The seed-era tables (no alembic_version): what other services created in production."""
    conn.exec_driver_sql(CHIPS.format(rich=RICH_CHIPS if rich else ""))
    conn.exec_driver_sql(
        CONVERSATIONS.format(
            id_type="bigserial PRIMARY KEY"
            if serial_ids
            else "uuid PRIMARY KEY DEFAULT gen_random_uuid()",
            fk="REFERENCES chips(id)" if rich else "",
        )
    )
    conn.exec_driver_sql(POOL_CONFIG)
    if operations:
        conn.exec_driver_sql(OPERATIONS)


def fill(conn: sa.Connection, chips: int, conversations_per_chip: int = 2) -> None:
    """Seed-era rows: chips of every status, conversations on active chips, one pool_config."""
    conn.execute(sa.text(CHIP_ROWS), {"n": chips})
    conn.execute(
        sa.text(CONVERSATION_ROWS),
        {"chips": max(1, chips // 3), "per_chip": conversations_per_chip},
    )
    conn.exec_driver_sql("INSERT INTO pool_config DEFAULT VALUES")


def snapshot(conn: sa.Connection, table: str) -> dict[str, tuple]:
    """Every seed column of every row, by id (to compare before and after adoption)."""
    columns = ", ".join(SEED_COLUMNS[table])
    rows = conn.exec_driver_sql(f"SELECT {columns} FROM {table}").all()
    return {str(row[0]): tuple(row) for row in rows}


#: The catalog, as text rows: columns, constraints, indexes, triggers, functions and comments (the
#: Alembic revision is read apart, by `revision`). Equal fingerprints: the schema did not change.
FINGERPRINT = {
    "tables": """
        SELECT relname, relkind FROM pg_class
        WHERE relnamespace = 'public'::regnamespace ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
          AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "indexes": """
        SELECT i.relname, pg_get_indexdef(x.indexrelid), x.indisvalid
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        WHERE i.relnamespace = 'public'::regnamespace ORDER BY 1""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
        FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT proname, prosrc FROM pg_proc
        WHERE pronamespace = 'public'::regnamespace ORDER BY 1""",
    "comments": """
        SELECT c.relname, d.objsubid, d.description FROM pg_description d
        JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass
        WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1, 2""",
}


def revision(conn: sa.Connection) -> list[tuple]:
    """The Alembic revision rows, none before Alembic's table exists.

    Two plain statements, no XML functions: PostgreSQL builds without libxml (the embedded one,
    some production ones) refuse query_to_xml / xpath with "unsupported XML feature".
    """
    if conn.exec_driver_sql("SELECT to_regclass('alembic_version')").scalar() is None:
        return []
    return [tuple(r) for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]


def fingerprint(conn: sa.Connection) -> dict[str, list[tuple]]:
    """The schema, from the catalog (compared before and after: "nothing changed")."""
    found = {
        name: [tuple(r) for r in conn.exec_driver_sql(sql)] for name, sql in FINGERPRINT.items()
    }
    return {**found, "revision": revision(conn)}


def all_rows(conn: sa.Connection) -> dict[str, list[str]]:
    """Every row of every public table, as text, sorted (data unchanged)."""
    tables = conn.exec_driver_sql(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind = 'r' ORDER BY 1"
    ).scalars()
    return {
        t: sorted(str(r) for r in conn.exec_driver_sql(f"SELECT * FROM {t}")) for t in list(tables)
    }
