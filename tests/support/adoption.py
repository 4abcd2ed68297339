"""The adoption tests' world: a database of their own holding the seed era's tables and rows,
the other services writing to it, and what the tests compare before and after.

The fixtures (`url`, `engine`: a database of each test's own) are in tests/store/adoption/conftest.py.
"""

from __future__ import annotations

import collections
import random
import threading
import time
import uuid
from collections.abc import Callable

import sqlalchemy as sa

from orchestrator.store import migrate
from orchestrator.store.adoption import baseline
from orchestrator.store.adoption.run import Event, Options
from tests.support import seed_era

CHIPS = 240


def seed(engine: sa.Engine, **variant: bool) -> None:
    """The seed-era tables with rows (chips of every status, conversations, one pool_config)."""
    with engine.begin() as conn:
        seed_era.create_seed_schema(conn, **variant)
        seed_era.fill(conn, CHIPS, conversations_per_chip=2)
        if variant.get("operations"):
            conn.exec_driver_sql(
                "INSERT INTO orchestrator_operations (operacao, chip_id, motivo)"
                " SELECT 'promotion_ready_active', id, 'seed era' FROM chips LIMIT 5"
            )


def state(engine: sa.Engine) -> tuple[dict, dict]:
    """(catalog fingerprint, every row): equal before and after means nothing changed."""
    with engine.connect() as conn:
        return seed_era.fingerprint(conn), seed_era.all_rows(conn)


def seed_rows(engine: sa.Engine) -> dict[str, dict[str, tuple]]:
    with engine.connect() as conn:
        return {t: seed_era.snapshot(conn, t) for t in seed_era.SEED_COLUMNS}


def scalar(engine: sa.Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


# -- the other services ---------------------------------------------------------------------------


class OtherServices:
    """Plain autocommit statements, as the services that created the tables send them.

    Each writer touches only rows it owns (chips it inserted, chips reserved for it) and records
    what it wrote, so the test knows every row's expected end state exactly.
    """

    def __init__(self, url: str, flip_ids: list[str], warm_ids: list[str], chip_ids: list[str]):
        self.engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_size=10)
        self.stop = threading.Event()
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.inserted: dict[str, tuple] = {}
        self.flipped: dict[str, bool] = {}
        self.trust: dict[str, int] = {}
        self.messages: collections.Counter[str] = collections.Counter()
        self.conversations: dict[str, str] = {}
        self.warmup_buffer: int | None = None
        self.probes: list[tuple[threading.Thread, dict]] = []
        self._flip, self._warm, self._chips = flip_ids, warm_ids, chip_ids
        self._threads = [
            threading.Thread(target=self._loop, args=(name, fn), daemon=True)
            for name, fn in (
                ("provision", self._provision),
                ("evolution", self._evolution),
                ("warmup", self._warmup),
                ("conversations", self._conversation),
                ("admin", self._admin),
            )
        ]

    def start(self) -> OtherServices:
        for t in self._threads:
            t.start()
        self.wait_progress()
        return self

    def finish(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(30)
        for t, _ in self.probes:
            t.join(30)
        self.engine.dispose()

    def _loop(self, name: str, write: Callable[[sa.Connection, random.Random], None]) -> None:
        rng = random.Random(name)
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                try:
                    write(conn, rng)
                    self.counts[name] += 1
                except Exception as error:  # recorded: the test asserts there is none
                    self.errors.append(f"{name}: {type(error).__name__}: {error}")
                    return
                time.sleep(0.003)  # pacing (two shared cores), not synchronisation

    def insert_chip(self, conn: sa.Connection, connected: bool, trust: int) -> str:
        """A chip with only the seed's columns: integer trust_score, status 'warming'."""
        values = {
            "telefone": f"+5511{uuid.uuid4().int % 10**9:09d}",
            "instance_name": f"svc-{uuid.uuid4().hex[:8]}",
            "status": "warming",
            "trust_score": trust,
            "trust_level": "baixo",
            "fase_warmup": "primeiros_contatos",
            "evolution_connected": connected,
            "msgs_enviadas_hoje": 0,
        }
        chip_id = conn.execute(
            sa.text(
                "INSERT INTO chips (telefone, instance_name, status, trust_score, trust_level,"
                " fase_warmup, warming_started_at, evolution_connected, msgs_enviadas_hoje)"
                " VALUES (:telefone, :instance_name, :status, :trust_score, :trust_level,"
                " :fase_warmup, now(), :evolution_connected, :msgs_enviadas_hoje) RETURNING id"
            ),
            values,
        ).scalar_one()
        return str(chip_id)

    def _provision(self, conn: sa.Connection, rng: random.Random) -> None:
        trust = rng.randint(0, 100)
        chip_id = self.insert_chip(conn, connected=True, trust=trust)
        self.inserted[chip_id] = (trust, True)

    def _evolution(self, conn: sa.Connection, rng: random.Random) -> None:
        chip_id, value = rng.choice(self._flip), rng.random() < 0.5
        conn.execute(
            sa.text("UPDATE chips SET evolution_connected = :v WHERE id = :id"),
            {"v": value, "id": chip_id},
        )
        self.flipped[chip_id] = value

    def _warmup(self, conn: sa.Connection, rng: random.Random) -> None:
        chip_id, trust = rng.choice(self._warm), rng.randint(0, 100)
        conn.execute(
            sa.text(
                "UPDATE chips SET trust_score = :t, msgs_enviadas_hoje = msgs_enviadas_hoje + 1"
                " WHERE id = :id"
            ),
            {"t": trust, "id": chip_id},
        )
        self.trust[chip_id] = trust
        self.messages[chip_id] += 1

    def _conversation(self, conn: sa.Connection, rng: random.Random) -> None:
        conversation, chip_id = f"svc-{uuid.uuid4().hex}", rng.choice(self._chips)
        conn.execute(
            sa.text("INSERT INTO conversation_chips (conversation_id, chip_id) VALUES (:c, :chip)"),
            {"c": conversation, "chip": chip_id},
        )
        self.conversations[conversation] = chip_id

    def _admin(self, conn: sa.Connection, rng: random.Random) -> None:
        value = rng.randint(5, 15)
        conn.execute(sa.text("UPDATE pool_config SET warmup_buffer = :n"), {"n": value})
        self.warmup_buffer = value

    def wait_progress(self, timeout: float = 60) -> None:
        """Until every writer has committed another statement (they run between our steps)."""
        start = dict(self.counts)
        deadline = time.monotonic() + timeout
        while any(self.counts[n] <= start.get(n, 0) for n in self._names()):
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"writers stalled: {dict(self.counts)}"
            time.sleep(0.005)

    def _names(self) -> list[str]:
        return ["provision", "evolution", "warmup", "conversations", "admin"]

    def probe_while_locked(self) -> None:
        """A disconnected chip inserted while migrate holds its lock: it waits, then lands."""
        result: dict = {}
        ready = threading.Event()

        def insert() -> None:
            with self.engine.connect() as conn:
                result["pid"] = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                ready.set()
                try:
                    result["id"] = self.insert_chip(conn, connected=False, trust=42)
                except Exception as error:
                    result["error"] = repr(error)

        thread = threading.Thread(target=insert, daemon=True)
        thread.start()
        self.probes.append((thread, result))
        assert ready.wait(10)
        with self.engine.connect() as conn:  # forced: the insert is seen waiting on the lock
            deadline = time.monotonic() + 30
            while conn.exec_driver_sql(
                f"SELECT wait_event_type IS DISTINCT FROM 'Lock' FROM pg_stat_activity"
                f" WHERE pid = {result['pid']}"
            ).scalar():
                assert time.monotonic() < deadline, "the probe never waited on the lock"
                time.sleep(0.005)


def adopt_under_writers(url: str, engine: sa.Engine) -> OtherServices:
    """Run migrate while the other services write; every online step waits for their progress."""
    with engine.connect() as conn:
        ids = [str(i) for i in conn.exec_driver_sql("SELECT id FROM chips ORDER BY id").scalars()]
    services = OtherServices(url, ids[:20], ids[20:40], ids[40:]).start()

    def hook(event: Event) -> None:
        if event.kind == "before":  # between two online steps: every writer got through
            services.wait_progress()
        elif event.kind == "locked":  # inside a short locked transaction: writers wait
            services.probe_while_locked()

    try:
        migrate.upgrade(url, Options(progress=hook))
        services.wait_progress()
    finally:
        services.finish()
    return services


def relfilenodes(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT relname, relfilenode FROM pg_class WHERE relname IN"
            " ('chips', 'conversation_chips', 'pool_config')"
        )
        return dict(rows.all())


def catalog_by_table(fp: dict) -> dict:
    """Names and definitions an adopted database must share with a fresh one."""
    casts = lambda d: d.replace("::double precision", "").replace("(", "").replace(")", "")  # noqa: E731
    return {
        "constraints": {
            (t, n, casts(d), v) for t, n, d, v in fp["constraints"] if t != "alembic_version"
        },
        "indexes": {(n, d, v) for n, d, v in fp["indexes"]},
        "triggers": set(fp["triggers"]),
        "functions": set(fp["functions"]),
        "not_null": {(t, c) for t, c, _, nn, _, _ in fp["columns"] if nn},
        "with_default": {(t, c) for t, c, _, _, d, ident in fp["columns"] if d or ident},
        "columns": {(t, c) for t, c, *_ in fp["columns"]},
        "types": {(t, c): ty for t, c, ty, *_ in fp["columns"]},
    }


VIOLATIONS = {
    "trust 150": (
        "UPDATE chips SET trust_score = 150 WHERE id = (SELECT id FROM chips ORDER BY id LIMIT 1)"
        " RETURNING id::text",
        "chips_trust_score_in_range",
    ),
    "status zumbi": (
        "UPDATE chips SET status = 'zumbi' WHERE id = (SELECT id FROM chips ORDER BY id DESC"
        " LIMIT 1) RETURNING id::text",
        "chips_status_known",
    ),
    "duplicate telefone": (
        "INSERT INTO chips (telefone, status, trust_score) SELECT telefone, 'warming', 10"
        " FROM chips ORDER BY id LIMIT 1 RETURNING id::text",
        "chips_telefone_key",
    ),
    "two pool_config rows": (
        "INSERT INTO pool_config DEFAULT VALUES RETURNING id::text",
        baseline.ONE_ROW_INDEX,
    ),
    "producao_min > producao_max": (
        "UPDATE pool_config SET producao_min = 30, producao_max = 20 RETURNING id::text",
        "pool_config_producao_min_le_max",
    ),
    "status NULL": (
        "UPDATE chips SET status = NULL WHERE id = (SELECT id FROM chips ORDER BY id LIMIT 1)"
        " RETURNING id::text",
        "chips_status_not_null",
    ),
    "conversation on an unknown chip": (
        "INSERT INTO conversation_chips (conversation_id, chip_id)"
        " VALUES ('orphan', gen_random_uuid()) RETURNING id::text",
        "conversation_chips_chip_id_fkey",
    ),
}
