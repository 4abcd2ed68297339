"""chip_status_tally: chip counts per status kept exact by triggers, whoever writes `chips`.

Other services insert, flip and delete chips with plain SQL; the tally must agree with a count of
the table in every snapshot, including while their transactions are in flight, and no writer may
wait on another because of it.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from orchestrator.domain.pool import STATUSES, Counts
from orchestrator.ops import checker
from orchestrator.store import repository as repo
from tests.factories import make_chip, phone
from tests.support.pg_waits import wait_until, waiting_backends

pytestmark = pytest.mark.db


def counted(engine: sa.Engine) -> Counts:
    """count(*) per status, the slow way."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, count(*) FROM chips GROUP BY status"))
        return Counts.from_pairs(dict(rows.all()))


def tallied(engine: sa.Engine) -> Counts:
    with engine.connect() as conn:
        return repo.status_counts(conn)


def assert_exact(engine: sa.Engine) -> Counts:
    """The tally equals count(*) per status (and the checker finds no drift)."""
    assert tallied(engine) == counted(engine)
    assert "status_tally_drift" not in {v.kind for v in checker.find_violations(engine)}
    return counted(engine)


def run(engine: sa.Engine, sql: str, **params: object) -> int:
    """Another service's statement, autocommitted; returns the rows it touched."""
    with engine.begin() as conn:
        return conn.execute(sa.text(sql), params).rowcount


def insert_sql(status: str) -> str:
    return (
        "INSERT INTO chips (telefone, status, trust_score)"
        f" VALUES ('{phone()}', '{status}', 90) RETURNING id"
    )


def test_plain_inserts_updates_and_deletes_by_another_service_keep_it_exact(
    clean_db: sa.Engine,
) -> None:
    # Given chips of every status, inserted one by one, several in one statement, and in bulk
    for status in STATUSES:
        if status != "provisioning":
            run(clean_db, insert_sql(status))
    run(
        clean_db,
        "INSERT INTO chips (telefone, status, trust_score) VALUES"
        " (:a, 'ready', 90), (:b, 'ready', 91), (:c, 'warming', 10)",
        a=phone(),
        b=phone(),
        c=phone(),
    )
    run(
        clean_db,
        "INSERT INTO chips (telefone, status, trust_score)"
        " SELECT '+5521' || lpad(g::text, 9, '0'), (ARRAY['active', 'ready', 'warming'])[1 + g % 3],"
        " 80 FROM generate_series(1, 300) AS g",
    )
    assert_exact(clean_db)
    # When they flip statuses in bulk, set a status to the value it has, update other columns,
    # upsert, delete, and roll a flip back
    run(clean_db, "UPDATE chips SET status = 'active' WHERE status = 'ready' AND trust_score < 91")
    run(clean_db, "UPDATE chips SET status = status, trust_score = 70 WHERE status = 'active'")
    run(clean_db, "UPDATE chips SET msgs_enviadas_hoje = 3 WHERE status = 'warming'")
    run(
        clean_db,
        "INSERT INTO chips (id, telefone, status, trust_score)"
        " SELECT id, telefone, 'banned', 10 FROM chips WHERE status = 'active' LIMIT 7"
        " ON CONFLICT (id) DO UPDATE SET status = excluded.status",
    )
    run(
        clean_db,
        "DELETE FROM chips WHERE id IN (SELECT id FROM chips WHERE status = 'warming' LIMIT 20)",
    )
    with pytest.raises(sa.exc.IntegrityError), clean_db.begin() as conn:
        conn.execute(sa.text("UPDATE chips SET status = 'degraded' WHERE status = 'ready'"))
        conn.execute(sa.text("UPDATE chips SET trust_score = 500"))  # fails: all rolled back
    # Then the tally still equals the count, status by status
    counts = assert_exact(clean_db)
    assert counts.banned == 8 and counts.active > 0 and counts.degraded == 1


def test_truncate_resets_it(clean_db: sa.Engine) -> None:
    make_chip(clean_db, "active")
    make_chip(clean_db, "ready")
    run(clean_db, "TRUNCATE conversation_chips, orchestrator_operations, chips")
    assert tallied(clean_db) == Counts()
    make_chip(clean_db, "active")
    assert assert_exact(clean_db).active == 1


def test_every_snapshot_sees_exactly_the_committed_flips(clean_db: sa.Engine) -> None:
    # Given 3 active and 2 ready chips
    active = [make_chip(clean_db, "active") for _ in range(3)]
    ready = [make_chip(clean_db, "ready") for _ in range(2)]
    first, second = clean_db.connect(), clean_db.connect()
    try:
        # When one transaction retires an active chip and another promotes a ready one, both open
        first.begin()
        first.execute(
            sa.text("UPDATE chips SET status = 'degraded' WHERE id = :id"), {"id": active[0]}
        )
        second.begin()
        second.execute(
            sa.text("UPDATE chips SET status = 'active' WHERE id = :id"), {"id": ready[0]}
        )
        # Then a reader sees neither, their own transactions see their own
        assert tallied(clean_db).active == 3
        assert repo.count_active(first) == 2 and repo.count_active(second) == 4
        # And after each commit, exactly what committed
        first.commit()
        assert tallied(clean_db).active == 2
        second.commit()
        assert tallied(clean_db).active == 3
    finally:
        first.close()
        second.close()
    assert_exact(clean_db)


def test_two_services_flipping_the_same_chip_count_once_each_change(clean_db: sa.Engine) -> None:
    # Given an active chip
    chip = make_chip(clean_db, "active")
    holder = clean_db.connect()
    holder.begin()
    holder.execute(sa.text("UPDATE chips SET status = 'degraded' WHERE id = :id"), {"id": chip})
    outcome: dict[str, object] = {}

    def other_service() -> None:
        # A compare-and-set that no longer matches once the first change commits, and a plain set
        with clean_db.begin() as conn:
            outcome["cas"] = conn.execute(
                sa.text("UPDATE chips SET status = 'ready' WHERE id = :id AND status = 'active'"),
                {"id": chip},
            ).rowcount
            outcome["set"] = conn.execute(
                sa.text("UPDATE chips SET status = 'banned' WHERE id = :id"), {"id": chip}
            ).rowcount

    thread = threading.Thread(target=other_service)
    try:
        # When the other service's flips queue on the row lock of the first, uncommitted change
        thread.start()
        wait_until(lambda: waiting_backends(clean_db) == 1)
        holder.commit()
    finally:
        holder.close()
    thread.join(20)
    # Then the compare-and-set changed nothing, the plain set moved degraded -> banned
    assert outcome == {"cas": 0, "set": 1}
    assert assert_exact(clean_db) == Counts(banned=1)


def test_a_status_change_never_waits_for_another_uncommitted_one(clean_db: sa.Engine) -> None:
    # Given two active chips, one of them being retired by a transaction still open
    first, second = make_chip(clean_db, "active"), make_chip(clean_db, "active")
    holder = clean_db.connect()
    holder.begin()
    holder.execute(sa.text("UPDATE chips SET status = 'degraded' WHERE id = :id"), {"id": first})
    try:
        # When another service retires the other chip, allowed to wait at most 1 s for any lock
        with clean_db.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '1s'"))
            conn.execute(
                sa.text("UPDATE chips SET status = 'banned' WHERE id = :id"), {"id": second}
            )
        # Then it committed: no shared counter row serialises status changes
        assert tallied(clean_db) == Counts(active=1, banned=1)
    finally:
        holder.rollback()
        holder.close()
    assert assert_exact(clean_db) == Counts(active=1, banned=1)


def tally_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM chip_status_tally")).scalar_one()


def test_compaction_folds_the_deltas_while_flips_and_another_compaction_are_in_flight(
    clean_db: sa.Engine,
) -> None:
    # Given a pool whose flips left many delta rows, and one more flip not yet committed
    chips = [make_chip(clean_db, "ready") for _ in range(6)]
    for chip in chips[:4]:
        run(clean_db, "UPDATE chips SET status = 'active' WHERE id = :id", id=chip)
    assert tally_rows(clean_db) > 10
    flip = clean_db.connect()
    flip.begin()
    flip.execute(sa.text("UPDATE chips SET status = 'active' WHERE id = :id"), {"id": chips[4]})
    first = clean_db.connect()
    first.begin()
    done: dict[str, int] = {}
    try:
        # When one compaction has folded but not committed, a second one queues behind it, and a
        # flip commits meanwhile
        repo.compact_status_tally(first)

        def second() -> None:
            with clean_db.begin() as conn:
                done["second"] = repo.compact_status_tally(conn)

        thread = threading.Thread(target=second)
        thread.start()
        wait_until(lambda: waiting_backends(clean_db) == 1)
        run(clean_db, "UPDATE chips SET status = 'active' WHERE id = :id", id=chips[5])
        first.commit()
        thread.join(20)
        # Then every figure stays exact, before and after the last flip commits
        assert assert_exact(clean_db) == Counts(active=5, ready=1)
        flip.commit()
    finally:
        first.close()
        flip.close()
    assert assert_exact(clean_db) == Counts(active=6)
    assert done["second"] == 4  # the first one's 2 folded rows and the flip's 2 deltas
    with clean_db.begin() as conn:
        repo.compact_status_tally(conn)
    assert tally_rows(clean_db) == 1  # one row per status left


def test_a_tally_the_triggers_did_not_see_is_reported_and_resynced(clean_db: sa.Engine) -> None:
    # Given chips written with the triggers bypassed (a restore with session_replication_role)
    make_chip(clean_db, "active")
    with clean_db.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(sa.text(insert_sql("active")))
        conn.execute(sa.text("UPDATE chips SET status = 'ready' WHERE status = 'active'"))
    # Then the checker reports the drift
    found = [v for v in checker.find_violations(clean_db) if v.kind == "status_tally_drift"]
    assert sorted(v.detail for v in found) == [
        "active: 1 tallied, 0 counted",
        "ready: 0 tallied, 2 counted",
    ]
    # And resync makes it exact again
    with clean_db.begin() as conn:
        conn.execute(sa.text("SELECT chip_status_tally_resync()"))
    assert assert_exact(clean_db) == Counts(ready=2)
