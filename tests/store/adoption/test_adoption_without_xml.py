"""Adoption on a PostgreSQL built without libxml (the embedded one; some production builds).

Every adoption test's database refuses XML functions (tests/support/noxml.py); these tests show
the refusal is real, and that adopting and checking the result need no XML at all.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from orchestrator.store import migrate
from tests.support import seed_era
from tests.support.adoption import seed

pytestmark = pytest.mark.db


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT query_to_xml('SELECT 1 AS v', false, true, '')",
        "SELECT xpath('/row/v/text()', table_to_xml('pg_class', false, true, ''))",
        "SELECT xml_is_well_formed('<a/>')",
    ],
    ids=["query_to_xml", "xpath", "xml_is_well_formed"],
)
def test_an_adoption_database_refuses_xml_functions_like_a_server_without_libxml(
    engine: sa.Engine, sql: str
) -> None:
    with engine.connect() as conn, pytest.raises(sa.exc.NotSupportedError) as refused:
        conn.exec_driver_sql(sql)
    assert "unsupported XML feature" in str(refused.value)


def test_adopting_and_reading_the_revision_need_no_xml_functions(
    url: str, engine: sa.Engine
) -> None:
    # Given the seed era's tables on a server that refuses XML functions
    seed(engine)
    with engine.connect() as conn:
        assert seed_era.fingerprint(conn)["revision"] == []
    # When migrate adopts them
    assert migrate.upgrade(url) == (None, migrate.head_revision(url))
    # Then the revision reads back without XML: exactly one row, head
    with engine.connect() as conn:
        assert seed_era.fingerprint(conn)["revision"] == [(migrate.head_revision(url),)]
