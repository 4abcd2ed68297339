"""`chips` run as ops type it: a subprocess on the real database."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.factories import add_conversations, make_chip
from tests.ops.cli.conftest import Cli
from tests.ops.cli.test_commands import db_snapshot

pytestmark = pytest.mark.db

#: The keys of one listed chip, exactly.
KEYS = [
    "id",
    "telefone",
    "status",
    "trust_score",
    "evolution_connected",
    "ddd",
    "instance_name",
    "open_conversations",
]


def chip(engine: sa.Engine, status: str, telefone: str, ddd: int, **values: object) -> str:
    """A chip with a chosen phone number (the order under test is by DDD, then phone)."""
    return make_chip(
        engine, status, telefone=telefone, ddd=ddd, instance_name=f"inst-{telefone[-4:]}", **values
    )


def a_mixed_pool(engine: sa.Engine) -> dict[str, str]:
    """Chips of every kind, inserted out of order; two active ones hold conversations."""
    ids = {
        "cancelled": chip(engine, "cancelled", "+5511900000001", 11),
        "active_21": chip(engine, "active", "+5521900000002", 21, trust=91.5),
        "ready_21": chip(engine, "ready", "+5521900000003", 21),
        "active_11_b": chip(engine, "active", "+5511900000009", 11, evolution_connected=False),
        "warming": chip(engine, "warming", "+5531900000004", 31),
        "active_11_a": chip(engine, "active", "+5511900000005", 11),
        "ready_11": chip(engine, "ready", "+5511900000006", 11),
        "banned": chip(engine, "banned", "+5511900000007", 11),
        "degraded": chip(engine, "degraded", "+5521900000008", 21),
        "provisioning": make_chip(engine, "provisioning", telefone=None, ddd=11),
    }
    add_conversations(engine, ids["active_11_a"], 3)
    add_conversations(engine, ids["active_21"], 2)
    return ids


def listed(cli: Cli, *args: str) -> list[dict]:
    out = cli("chips", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_chips_lists_every_chip_by_lifecycle_then_ddd_and_phone_with_its_conversations(
    clean_db: sa.Engine, cli: Cli
) -> None:
    # Given chips of every status, inserted out of order
    ids = a_mixed_pool(clean_db)
    # When ops list the chips as JSON
    rows = listed(cli)
    # Then every chip is one row with exactly the contract's keys, in lifecycle order, then by
    # DDD and phone, with its open conversations counted
    assert all(list(row) == KEYS for row in rows)
    assert [row["id"] for row in rows] == [
        ids[name]
        for name in (
            "provisioning",
            "warming",
            "ready_11",
            "ready_21",
            "active_11_a",
            "active_11_b",
            "active_21",
            "degraded",
            "banned",
            "cancelled",
        )
    ]
    by_id = {row["id"]: row for row in rows}
    assert by_id[ids["active_11_a"]]["open_conversations"] == 3
    assert by_id[ids["active_21"]] == {
        "id": ids["active_21"],
        "telefone": "+5521900000002",
        "status": "active",
        "trust_score": 91.5,
        "evolution_connected": True,
        "ddd": 21,
        "instance_name": "inst-0002",
        "open_conversations": 2,
    }
    assert by_id[ids["active_11_b"]]["evolution_connected"] is False
    assert sum(row["open_conversations"] for row in rows) == 5
    assert by_id[ids["provisioning"]]["telefone"] is None


def test_chips_filters_by_status_and_by_ddd(clean_db: sa.Engine, cli: Cli) -> None:
    # Given the mixed pool
    ids = a_mixed_pool(clean_db)
    # When ops filter by status, by DDD, and by both
    # Then only those chips are listed, in order
    assert [r["id"] for r in listed(cli, "--status", "ready")] == [ids["ready_11"], ids["ready_21"]]
    assert [r["id"] for r in listed(cli, "--ddd", "21")] == [
        ids["ready_21"],
        ids["active_21"],
        ids["degraded"],
    ]
    assert [r["id"] for r in listed(cli, "--status", "active", "--ddd", "11")] == [
        ids["active_11_a"],
        ids["active_11_b"],
    ]
    assert listed(cli, "--status", "active", "--ddd", "99") == []


def test_a_page_cut_at_the_limit_says_so_on_stderr_and_of_how_many(
    clean_db: sa.Engine, cli: Cli
) -> None:
    # Given the mixed pool (10 chips, 3 active)
    ids = a_mixed_pool(clean_db)
    # When ops ask for 2 chips, then 2 active ones, then 2 of DDD 11, then all of them
    first = cli("chips", "--json", "--limit", "2")
    active = cli("chips", "--json", "--status", "active", "--limit", "2")
    ddd = cli("chips", "--json", "--ddd", "11", "--limit", "2")
    everything = cli("chips", "--json", "--limit", "10")
    # Then the page holds the first chips, stdout stays JSON, and stderr says the page was cut
    # (of how many when the counts per status tell it)
    assert [r["id"] for r in json.loads(first.stdout)] == [ids["provisioning"], ids["warming"]]
    assert first.stderr.strip() == (
        "chip-orchestrator: showing the first 2 of 10 chips;"
        " --limit N shows more, --status / --ddd narrow the list"
    )
    assert [r["id"] for r in json.loads(active.stdout)] == [ids["active_11_a"], ids["active_11_b"]]
    assert "showing the first 2 of 3 chips" in active.stderr
    assert len(json.loads(ddd.stdout)) == 2
    assert "showing the first 2 chips;" in ddd.stderr
    assert len(json.loads(everything.stdout)) == 10 and everything.stderr == ""
    assert {first.returncode, active.returncode, ddd.returncode, everything.returncode} == {0}


def test_the_table_shows_phones_and_shows_ids_when_the_terminal_is_wide_enough(
    clean_db: sa.Engine, cli: Cli
) -> None:
    # Given the mixed pool
    ids = a_mixed_pool(clean_db)
    # When ops list it in a wide terminal and in an 80-column one
    wide = cli("chips", COLUMNS="140")
    narrow = cli("chips", COLUMNS="80")
    # Then both show every phone number; the ids show in the wide one, the narrow one says where
    assert wide.returncode == narrow.returncode == 0, wide.stderr + narrow.stderr
    for out in (wide, narrow):
        assert "+5521900000002" in out.stdout and "(sem numero)" in out.stdout
    assert ids["active_21"] in wide.stdout
    assert ids["active_21"] not in narrow.stdout
    assert "ids: --json" in narrow.stdout
    assert max(map(len, wide.stdout.splitlines())) <= 140
    assert max(map(len, narrow.stdout.splitlines())) <= 80


def test_an_empty_pool_lists_nothing(clean_db: sa.Engine, cli: Cli) -> None:
    assert listed(cli) == []
    out = cli("chips")
    assert out.returncode == 0 and "nenhum chip" in out.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--status", "dormant"), "invalid choice: 'dormant'"),
        (("--ddd", "5"), "5 is not a Brazilian area code (11..99)"),
        (("--ddd", "onze"), "not a DDD: 'onze'"),
        (("--limit", "0"), "--limit must be between 1 and 10000"),
        (("--limit", "10001"), "--limit must be between 1 and 10000"),
        (("--limit", "lots"), "not a whole number: 'lots'"),
    ],
)
def test_a_bad_filter_is_one_line_exit_2_and_changes_nothing(
    clean_db: sa.Engine, cli: Cli, args: tuple[str, ...], says: str
) -> None:
    # Given a pool
    a_mixed_pool(clean_db)
    before = db_snapshot(clean_db)
    # When ops give a filter that cannot be
    out = cli("chips", *args)
    # Then one line saying what is wrong, exit 2, nothing printed or changed
    assert out.returncode == 2, out
    assert out.stdout == ""
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("chip-orchestrator") and says in line, line
    assert db_snapshot(clean_db) == before


def test_the_migration_left_the_listing_index_valid(clean_db: sa.Engine) -> None:
    """A page is an ordered range of this index per status (docs/benchmarks.md measures it)."""
    with clean_db.connect() as conn:
        definition = conn.execute(
            sa.text(
                "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE c.relname = 'idx_chips_status_ddd_telefone' AND i.indisvalid"
            )
        ).scalar_one()
    assert definition.endswith("ON public.chips USING btree (status, ddd, telefone)")
