"""`chip-orchestrator report` and `history`: read-only views of orchestrator_operations.

Bad input (a malformed --month, an unknown chip) is a Rejected: one line, exit 2 (cli.main).
"""

from __future__ import annotations

import argparse
import json

#: Exit code of a successful read.
EXIT_OK = 0


def _engine():
    from orchestrator.app import bootstrap

    return bootstrap.engine()


def _print_json(data: dict) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.ops import report_render
    from orchestrator.services import reports

    data = reports.month_report(_engine(), args.month)
    if args.json:
        _print_json(data)
    else:
        report_render.print_report(data)
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from orchestrator.errors import Rejected
    from orchestrator.ops import report_render
    from orchestrator.services import reports

    if args.limit < 1:
        raise Rejected(f"--limit must be at least 1, got {args.limit}", code="malformed")
    data = reports.chip_history(_engine(), args.chip, limit=args.limit)
    if args.json:
        _print_json(data)
    else:
        report_render.print_history(data)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add `report` and `history` to the command line's subcommands."""
    p = sub.add_parser(
        "report",
        help="one month: numbers bought, cancelled, replaced (by reason), conversations moved,"
        " cost (docs/reports.md)",
    )
    p.add_argument("--month", metavar="YYYY-MM", help="calendar month in UTC (default: this one)")
    p.add_argument("--json", action="store_true", help="the report as JSON (docs/reports.md)")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("history", help="one chip's operations and state changes, newest first")
    p.add_argument("chip", metavar="CHIP", help="chip id (uuid) or phone number")
    p.add_argument("--json", action="store_true", help="the history as JSON (docs/reports.md)")
    p.add_argument("--limit", type=int, default=200, help="newest operations shown (default 200)")
    p.set_defaults(fn=cmd_history)
