"""The docs stand alone and tell the truth: docs/contract.md checked against the code.

Every task name and its arguments, every pool_config column (with its type and default, read
from a migrated database), every environment variable the settings read and every command and
flag the CLI registers must be in the contract; no page sends readers to a document the
repository does not hold; every relative link and its #anchor resolves.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import orchestrator
from orchestrator import task_names
from orchestrator.ops.cli import build_parser
from orchestrator.store.schema import pool_config

ROOT = Path(orchestrator.__file__).resolve().parent.parent
CONTRACT = ROOT / "docs" / "contract.md"
#: The pages a user reads: README, DEVELOPERS and everything under docs/.
PAGES = sorted([ROOT / "README.md", ROOT / "DEVELOPERS.md", *(ROOT / "docs").rglob("*.md")])
#: The internal spec, by any spelling; it is not in the repository, so no page may point at it.
INTERNAL_SPEC = re.compile(r"\bspec\b", re.IGNORECASE)
#: PostgreSQL's type names, as the contract abbreviates them.
TYPE_ALIASES = {"timestamptz": "timestamp with time zone"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _contract() -> str:
    assert CONTRACT.is_file(), "docs/contract.md is missing"
    return CONTRACT.read_text()


def _section(text: str, heading: str) -> str:
    """The body of the section under `heading` (up to the next heading of its level or above)."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading) + 1
    for end in range(start, len(lines)):
        match = re.match(r"(#+) ", lines[end])
        if match and len(match.group(1)) <= level:
            return "\n".join(lines[start:end])
    return "\n".join(lines[start:])


def _rows(section: str) -> dict[str, list[str]]:
    """Table rows whose first cell names things in `code`, by each name, as lists of cells."""
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith("`"):
            for name in re.findall(r"`([^`]+)`", cells[0]):
                rows[name] = cells
    return rows


def _task_arguments() -> dict[str, list[str]]:
    """Each Celery task's name and parameters, read from tasks/*.py (the code, not the docs)."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tasks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                name = next(
                    (
                        k.value
                        for k in getattr(decorator, "keywords", [])
                        if k.arg == "name" and isinstance(k.value, ast.Attribute)
                    ),
                    None,
                )
                if name is not None:
                    params = [a.arg for a in node.args.args if a.arg != "self"]
                    found[getattr(task_names, name.attr)] = params
    return found


def _verbs(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, list[str]]]:
    """Every command (`config set` included) and its flags and positional names."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                verb = f"{prefix} {name}".strip()
                words = []
                for option in sub._actions:
                    if isinstance(option, argparse._HelpAction | argparse._SubParsersAction):
                        continue
                    if option.option_strings:
                        words.append(max(option.option_strings, key=len))
                    else:
                        words.append(option.metavar or option.dest.upper())
                yield verb, words
                yield from _verbs(sub, verb)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    """The anchors a page's headings get (outside code blocks; repeats numbered as GitHub does)."""
    seen: dict[str, int] = {}
    anchors = set()
    fenced = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#+ (.+)", line)):
            slug = _slug(match.group(1))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_no_page_sends_readers_to_the_internal_spec() -> None:
    mentions = [
        f"{page.relative_to(ROOT)}:{number}: {line.strip()}"
        for page in PAGES
        for number, line in enumerate(page.read_text().splitlines(), 1)
        if INTERNAL_SPEC.search(line)
    ]
    assert mentions == []


def test_every_task_is_in_the_contract_with_its_arguments() -> None:
    rows = _rows(_section(_contract(), "### Names, arguments, results"))
    arguments = _task_arguments()
    assert sorted(arguments) == sorted(task_names.ALL)
    assert sorted(rows) == sorted(task_names.ALL)
    for name, params in arguments.items():
        for param in params:
            assert re.search(rf"\b{param}\b", rows[name][1]), (name, param, rows[name][1])


def test_every_pool_config_column_is_in_the_contract() -> None:
    rows = _rows(_section(_contract(), "### `pool_config`"))
    assert sorted(rows) == sorted(pool_config.c.keys())


def test_every_environment_variable_the_settings_read_is_in_the_contract() -> None:
    source = (ROOT / "orchestrator" / "app" / "settings.py").read_text()
    read = set(re.findall(r"env\.get\(\s*\"([A-Z][A-Z0-9_]+)\"", source))
    rows = _rows(_section(_contract(), "## Environment"))
    assert len(read) >= 20  # the pattern still finds what settings.py reads
    assert sorted(read - set(rows)) == []


def test_every_command_and_flag_is_in_the_contract() -> None:
    rows = _rows(_section(_contract(), "## Command line"))
    verbs = dict(_verbs(build_parser()))
    assert {"migrate", "status", "webhooks", "forecast", "report"} <= set(verbs)
    assert sorted(set(verbs) - set(rows)) == []
    missing = {
        verb: [w for w in words if not re.search(rf"`{re.escape(w)}\b", rows[verb][1])]
        for verb, words in verbs.items()
    }
    assert {verb: words for verb, words in missing.items() if words} == {}


def test_every_relative_link_and_anchor_in_the_docs_resolves() -> None:
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


@pytest.mark.db
def test_the_contract_gives_each_pool_config_column_the_type_and_default_the_database_has(
    engine: sa.Engine,
) -> None:
    """Read from a database migrated to head: its types, defaults and NULLs, as documented."""
    rows = _rows(_section(_contract(), "### `pool_config`"))
    query = sa.text(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
        " pg_get_expr(d.adbin, d.adrelid)"
        " FROM pg_attribute a LEFT JOIN pg_attrdef d"
        "   ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = 'pool_config'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
    )
    with engine.connect() as conn:
        columns = conn.execute(query).all()
    assert sorted(name for name, *_ in columns) == sorted(rows)
    wrong = {}
    for name, kind, not_null, default in columns:
        documented_type = rows[name][1].strip("`")
        documented_default = rows[name][2].strip("`")
        actual_default = "NULL" if default is None else re.sub(r"::[\w ]+$", "", default)
        if TYPE_ALIASES.get(documented_type, documented_type).replace(" ", "") != kind.replace(
            " ", ""
        ):
            wrong[name] = f"type {documented_type}, database {kind}"
        elif documented_default != actual_default:
            wrong[name] = f"default {documented_default}, database {actual_default}"
        elif not not_null and "NULL" not in rows[name][3]:
            wrong[name] = "may be NULL, and the contract does not say what NULL means"
    assert wrong == {}


@pytest.mark.db
def test_the_contract_names_every_table_operation_code_and_chip_status_of_the_database(
    engine: sa.Engine,
) -> None:
    """Every table of ours, every operacao and status the CHECKs allow, every column of the
    shared tables: as a migrated database has them."""
    text = _contract()
    with engine.connect() as conn:
        tables = conn.execute(
            sa.text(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename <> 'alembic_version'"
            )
        ).scalars()
        checks = dict(
            conn.execute(
                sa.text(
                    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conname IN"
                    " ('orchestrator_operations_operacao_known', 'chips_status_known')"
                )
            ).all()
        )
        shared = conn.execute(
            sa.text(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name IN"
                " ('chips', 'conversation_chips', 'orchestrator_operations')"
            )
        ).all()
        tables = sorted(tables)
    operacoes = re.findall(r"'(\w+)'", checks["orchestrator_operations_operacao_known"])
    statuses = re.findall(r"'(\w+)'", checks["chips_status_known"])
    assert {"rehabilitation", "config_change"} <= set(operacoes)
    assert len(statuses) == 7
    operation_rows = _rows(_section(text, "### `orchestrator_operations`"))
    status_rows = _rows(_section(text, "### `chips`"))
    assert [t for t in tables if f"`{t}`" not in text] == []
    assert sorted(set(operacoes) - set(operation_rows)) == []
    assert sorted(set(statuses) - set(status_rows)) == []
    for table, column in shared:
        rows = _rows(_section(text, f"### `{table}`"))
        assert column in rows, (table, column)
