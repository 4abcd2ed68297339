"""`chip-orchestrator chips` and `config` / `config set`: the pool's chips and settings.

ops/cli.py calls `register(sub)`; a bad filter or setting is a Rejected, printed by cli.main as
one line with exit 2. Data goes to stdout; notes (a page cut short) go to stderr, so `--json`
output stays parseable.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.domain.config import STATUSES

#: Exit code of a command that did what it was asked (a no-op `config set` included).
EXIT_OK = 0
#: The table's columns (JSON keys, shortened) and their alignment.
CHIP_COLUMNS = (
    ("telefone", "left"),
    ("status", "left"),
    ("trust", "right"),
    ("conectado", "left"),
    ("ddd", "right"),
    ("instancia", "left"),
    ("conversas", "right"),
    ("id", "left"),
)
#: Terminal width from which the table shows the chips' ids.
WIDTH_FOR_IDS = 116
#: What NULL means in each nullable setting, shown beside it.
NULL_MEANS = {
    "number_monthly_cost": "unknown",
    "max_purchases_per_day": "no cap",
    "rehab_after_minutes": "never",
}


def _engine():
    from orchestrator.app import bootstrap

    return bootstrap.engine()


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def cmd_chips(args: argparse.Namespace) -> int:
    """One page of chips as a table or JSON; a note on stderr when more matched."""
    from orchestrator.services import chip_list

    page = chip_list.list_chips(_engine(), args.status, args.ddd, args.limit)
    if args.json:
        _print_json(page.chips)
    else:
        console = Console()
        console.print(_chips_table(page.chips, args, console.width))
    if page.truncated:
        total = "" if page.matching is None else f" of {page.matching}"
        print(
            f"chip-orchestrator: showing the first {len(page.chips)}{total} chips;"
            " --limit N shows more, --status / --ddd narrow the list",
            file=sys.stderr,
        )
    return EXIT_OK


def _chips_table(rows: list[dict], args: argparse.Namespace, width: int) -> Table:
    """The chips; the id column only when the terminal has room for it (a phone number names a
    chip as well, for `history`, `replace` and `cancel`)."""
    shown = [f"status {args.status}" if args.status else "", f"DDD {args.ddd}" if args.ddd else ""]
    title = "Chips" + (f" ({', '.join(s for s in shown if s)})" if any(shown) else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    with_id = width >= WIDTH_FOR_IDS
    for name, justify in CHIP_COLUMNS[: None if with_id else -1]:
        table.add_column(name, justify=justify, no_wrap=name != "instancia")
    for row in rows:
        cells = [
            escape(row["telefone"] or "(sem numero)"),
            row["status"],
            f"{row['trust_score']:g}",
            "sim" if row["evolution_connected"] else "[red]nao[/]",
            "" if row["ddd"] is None else str(row["ddd"]),
            escape(row["instance_name"] or ""),
            str(row["open_conversations"]),
        ]
        table.add_row(*cells, *([row["id"]] if with_id else []))
    notes = [] if rows else ["nenhum chip"]
    if not with_id:
        notes.append(f"ids: --json, or a terminal {WIDTH_FOR_IDS} columns wide")
    table.caption = "; ".join(notes) or None
    return table


def cmd_config(args: argparse.Namespace) -> int:
    """`config`: every setting; `config set NAME=VALUE ...`: change them."""
    if args.action == "set":
        return _config_set(args.assignments)
    from orchestrator.services import config

    settings, updated_at = config.current(_engine())
    if args.json:
        _print_json(settings)
        return EXIT_OK
    table = Table(title="pool_config")
    table.add_column("setting")
    table.add_column("value", justify="right")
    for name, value in settings.items():
        table.add_row(name, _shown(name, value))
    table.caption = f"updated_at {updated_at}; change with: config set NAME=VALUE ..."
    Console().print(table)
    return EXIT_OK


def _shown(name: str, value: object) -> str:
    if value is None:
        return f"NULL ({NULL_MEANS.get(name, 'unset')})"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _config_set(assignments: list[str]) -> int:
    from orchestrator.services import config

    done = config.change(_engine(), assignments)
    for name, value in done.unchanged.items():
        print(f"{name}: already {_shown(name, value)} (unchanged)")
    if done.operation_id is None:
        print("pool_config unchanged: nothing recorded")
        return EXIT_OK
    for name, after in done.depois.items():
        print(f"{name}: {_shown(name, done.antes[name])} -> {_shown(name, after)}")
    print(f"recorded as operation {done.operation_id} (config_change); #operacoes notified")
    return EXIT_OK


def _ddd(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a DDD: {text[:16]!r} (11..99)") from None
    if not 11 <= value <= 99:
        raise argparse.ArgumentTypeError(f"{value} is not a Brazilian area code (11..99)")
    return value


def _limit(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:16]!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add `chips` and `config` to the command line."""
    from orchestrator.services.chip_list import DEFAULT_LIMIT, MAX_LIMIT

    p = sub.add_parser(
        "chips",
        help="list chips (status in lifecycle order, then DDD and phone) with open conversations",
    )
    p.add_argument("--status", choices=STATUSES, metavar="S", help=", ".join(STATUSES))
    p.add_argument("--ddd", type=_ddd, metavar="N", help="one area code, 11..99")
    p.add_argument(
        "--limit",
        type=_limit,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"most chips listed, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT})",
    )
    p.add_argument("--json", action="store_true", help="a JSON list, one object per chip")
    p.set_defaults(fn=cmd_chips)

    p = sub.add_parser("config", help="show pool_config; `config set NAME=VALUE ...` changes it")
    p.add_argument("--json", action="store_true", help="every setting as one JSON object")
    p.set_defaults(fn=cmd_config, action=None)
    actions = p.add_subparsers(dest="action", metavar="set")
    s = actions.add_parser(
        "set",
        help="change settings in one transaction, recorded (config_change) and told in #operacoes",
        description="Values: integers, numbers, true/false/on/off; NULL where the setting allows"
        " it (number_monthly_cost, max_purchases_per_day, rehab_after_minutes). A refused change"
        " changes nothing.",
    )
    s.add_argument("assignments", nargs="+", metavar="NAME=VALUE")
