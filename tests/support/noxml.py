"""A database that answers like a PostgreSQL built without libxml: every XML function refuses.

The embedded PostgreSQL (and some production builds) has no libxml: query_to_xml, xpath and
the other XML functions raise "unsupported XML feature". The machine's server has it, so a test
run there would never notice a dependency on them. Functions of the same signatures in a schema
`noxml`, searched before pg_catalog, raise that same error. Casts to `xml` and the XML syntax
(XMLPARSE, XMLELEMENT) do not go through the search path and are not shadowed.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import make_url

#: Creates noxml.<f>(<same arguments>) for every plain XML function of pg_catalog.
SHADOW = """
CREATE SCHEMA IF NOT EXISTS noxml;
DO $shadow$
DECLARE f record;
BEGIN
  FOR f IN
    SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
           CASE WHEN p.proretset THEN 'SETOF ' ELSE '' END
             || format_type(p.prorettype, NULL) AS returns
    FROM pg_proc p
    WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f'
      AND p.proname ~ 'xml|xpath' AND p.proname NOT IN ('xml_in', 'xml_out', 'xml_recv', 'xml_send')
  LOOP
    EXECUTE format(
      'CREATE FUNCTION noxml.%I(%s) RETURNS %s LANGUAGE plpgsql AS $body$ BEGIN'
      ' RAISE EXCEPTION ''unsupported XML feature'' USING ERRCODE = ''feature_not_supported'','
      ' DETAIL = ''This functionality requires the server to be built with libxml support.'';'
      ' END $body$', f.proname, f.args, f.returns);
  END LOOP;
END
$shadow$
"""

#: public stays first: what adoption creates still lands there (current_schema()).
SEARCH_PATH = "public, noxml, pg_catalog"


def without_xml(url: str) -> None:
    """Make the database at url refuse XML functions (new sessions: the search path is per database)."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(SHADOW))
            name = make_url(url).database
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET search_path = {SEARCH_PATH}')
    finally:
        engine.dispose()
