"""Set-based pool generation (INSERT .. SELECT generate_series): 100k chips in seconds.

Two mixes. `realistic`: most chips active/ready/warming/degraded/cancelled, a few low-trust,
disconnected (past and within the grace period), banned and provisioning, ten conversations per
chip (open only on serving chips). `serving`: only active, ready and warming chips with a clean
history, so the invariant checker starts at zero violations before the worker benchmarks.
"""

from __future__ import annotations

import sqlalchemy as sa

#: Per-mille buckets of g % 1000 -> status (realistic mix).
REALISTIC = """
CASE
  WHEN g % 1000 < 400 THEN 'active'
  WHEN g % 1000 < 550 THEN 'ready'
  WHEN g % 1000 < 800 THEN 'warming'
  WHEN g % 1000 < 900 THEN 'degraded'
  WHEN g % 1000 < 988 THEN 'cancelled'
  WHEN g % 1000 < 996 THEN 'banned'
  ELSE 'provisioning'
END"""

#: A large pool with years of history (benchmarks/scale.py): 10% active, most chips retired,
#: nothing due (with RARE_NEVER): the benchmark adds the same due work at every size.
SCALE = """
CASE
  WHEN g % 1000 < 100 THEN 'active'
  WHEN g % 1000 < 160 THEN 'ready'
  WHEN g % 1000 < 310 THEN 'warming'
  WHEN g % 1000 < 400 THEN 'degraded'
  ELSE 'cancelled'
END"""

#: Serving-only mix: 40% active, 30% ready, 30% warming.
SERVING = """
CASE
  WHEN g % 10 < 4 THEN 'active'
  WHEN g % 10 < 7 THEN 'ready'
  ELSE 'warming'
END"""

MIXES = {"realistic": REALISTIC, "scale": SCALE, "serving": SERVING}

CHIPS = """
INSERT INTO chips (telefone, instance_name, ddd, status, trust_score, trust_level, fase_warmup,
                   warming_started_at, ready_at, promoted_to_active_at, degraded_at,
                   evolution_connected, evolution_disconnected_at, msgs_enviadas_hoje,
                   provisioning_name, created_at)
SELECT CASE WHEN s = 'provisioning' THEN NULL ELSE '+55' || (11 + g % 89) || '9' || lpad(g::text, 8, '0') END,
       'inst-' || g, 11 + g % 89, s,
       CASE
         WHEN s = 'active' AND g % :rare = 7 THEN 40 + g % 15           -- low trust (1%)
         WHEN s = 'active' THEN 65 + (g * 37) % 35
         WHEN s = 'ready' THEN 85 + (g * 13) % 15
         WHEN s = 'warming' THEN 30 + (g * 7) % 70
         ELSE 20 + (g * 11) % 60
       END,
       'nivel-' || (g % 5),
       CASE WHEN s = 'warming' THEN (ARRAY['primeiros_contatos', 'expansao', 'pre_operacao',
                                          'operacao', 'operacao'])[1 + g % 5]
            ELSE 'operacao' END,
       -- warm-up started 0..20 days ago; 1 in 47 chips has warmed long enough (steady state:
       -- the cycle promotes eligible chips every period, so few are eligible at any time)
       now() - make_interval(days => CASE WHEN s <> 'warming' OR g % :eligible = 0 THEN 30 ELSE g % 21 END),
       CASE WHEN s IN ('ready', 'active', 'degraded') THEN now() - interval '3 days' END,
       CASE WHEN s IN ('active', 'degraded') THEN now() - interval '2 days' END,
       CASE WHEN s = 'degraded' OR (s = 'banned' AND g % 2 = 0) OR s = 'cancelled'
            THEN now() - interval '1 day' END,
       NOT (s = 'active' AND g % :rare IN (13, 14)),                      -- disconnected (2%)
       CASE WHEN s = 'active' AND g % :rare = 13 THEN now() - interval '45 minutes'
            WHEN s = 'active' AND g % :rare = 14 THEN now() - interval '5 minutes' END,
       g % 200,
       CASE WHEN s = 'provisioning' THEN 'bench-' || g END,
       now() - interval '60 days'
FROM (SELECT g, {mix} AS s FROM generate_series(1, :n) AS g) AS gen
"""

# Open conversations live on serving chips (active, and banned chips not yet handled).
CONVERSATIONS = """
INSERT INTO conversation_chips (conversation_id, chip_id, active, created_at)
SELECT c.id::text || '-' || k, c.id,
       c.status = 'active' OR (c.status = 'banned' AND c.degraded_at IS NULL),
       now() - make_interval(hours => k)
FROM chips c CROSS JOIN generate_series(1, :per_chip) AS k
"""


#: Per mix: (rare, eligible) moduli of the CHIPS template. With RARE_NEVER only chips 7, 13 and
#: 14 are low-trust / disconnected and no warming chip is due, whatever the pool's size.
RARE_NEVER = 2**31 - 1
MODULI = {"realistic": (100, 47), "serving": (100, 47), "scale": (RARE_NEVER, RARE_NEVER)}


def scaled_config(chips: int, mix: str = "realistic") -> dict[str, object]:
    """A pool_config in proportion to the pool (the defaults are sized for 30 chips)."""
    if mix == "scale":  # every active chip is needed, 10% of headroom above them
        return {
            "producao_min": chips // 10,
            "producao_max": chips // 10 + chips // 100,
            "ready_min": chips // 20,
            "warmup_buffer": chips // 10,
            "warmup_days": 21,
        }
    return {
        "producao_min": int(chips * 0.38),
        "producao_max": chips,
        "ready_min": int(chips * 0.10),
        "warmup_buffer": int(chips * 0.30),
        "warmup_days": 21,
    }


def generate_pool(
    engine: sa.Engine, chips: int, *, per_chip: int = 10, mix: str = "realistic"
) -> None:
    """Empty the pool and fill it with `chips` chips and `per_chip` conversations each."""
    config = scaled_config(chips, mix)
    rare, eligible = MODULI[mix]
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL statement_timeout = 0"))  # 10M rows take minutes
        conn.execute(
            sa.text(
                "TRUNCATE alert_state, notification_outbox, orchestrator_operations,"
                " conversation_chips, chips, stranded_chip_events"
            )
        )
        conn.execute(
            sa.text("UPDATE pool_config SET " + ", ".join(f"{k} = :{k}" for k in config)), config
        )
        body = CHIPS.format(mix=MIXES[mix])
        conn.execute(sa.text(body), {"n": chips, "rare": rare, "eligible": eligible})
        if per_chip:
            conn.execute(sa.text(CONVERSATIONS), {"per_chip": per_chip})
    vacuum_analyze(engine)


#: The tables vacuum_analyze visits by default.
POOL_TABLES = (
    "chips",
    "conversation_chips",
    "orchestrator_operations",
    "pool_config",
    "chip_status_tally",
    "stranded_chip_events",
)


#: What a swap writes (its rows and its triggers'): vacuumed between bursts, as autovacuum would
#: on a production server (benchmark servers may run without it). Left alone, 300 swaps leave
#: 3,000 dead conversation rows and each run costs the next a little more.
SWAP_TABLES = (
    "chips",
    "chip_status_tally",
    "conversation_chips",
    "orchestrator_operations",
    "operation_tally",
    "notification_outbox",
    "stranded_chip_events",
)


def vacuum_analyze(engine: sa.Engine, tables: tuple[str, ...] = POOL_TABLES) -> None:
    """VACUUM ANALYZE the pool tables: fresh statistics and visibility map, as autovacuum would."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("SET statement_timeout = 0"))
        try:
            for table in tables:
                conn.execute(sa.text(f"VACUUM ANALYZE {table}"))
        finally:
            conn.execute(sa.text("RESET statement_timeout"))


def add_chip_with_conversations(engine: sa.Engine, status: str, trust: float, n: int) -> str:
    """One chip holding n open conversations (set-based); returns its id."""
    with engine.begin() as conn:
        chip_id = conn.execute(
            sa.text(
                "INSERT INTO chips (telefone, ddd, status, trust_score, fase_warmup, ready_at,"
                " promoted_to_active_at) VALUES ('+55119' || lpad((random() * 1e8)::bigint::text,"
                " 8, '0') || lpad((random() * 1e4)::int::text, 4, '0'), 11, :status, :trust,"
                " 'operacao', now() - interval '3 days', now() - interval '2 days') RETURNING id"
            ),
            {"status": status, "trust": trust},
        ).scalar_one()
        if n:
            conn.execute(
                sa.text(
                    "INSERT INTO conversation_chips (conversation_id, chip_id, active)"
                    " SELECT :prefix || k, :chip, true FROM generate_series(1, :n) AS k"
                ),
                {"prefix": f"big-{chip_id}-", "chip": chip_id, "n": n},
            )
    return str(chip_id)
