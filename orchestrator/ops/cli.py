"""chip-orchestrator: the ops command line (also `python -m orchestrator`).

Errors are one clear line on stderr and a non-zero exit code; every command has --help.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import NoReturn

from orchestrator import task_names
from orchestrator.errors import ConfigError, OrchestratorError, Rejected, TransientError
from orchestrator.ops import cli_planning, cli_pool, cli_reports
from orchestrator.webhooks.cli import register as register_webhooks

#: Exit codes: 0 ok, 1 a check found problems, 2 bad input / refused, 3 a dependency is down.
EXIT_OK, EXIT_FOUND, EXIT_REJECTED, EXIT_UNAVAILABLE = 0, 1, 2, 3


def _engine():
    from orchestrator.app import bootstrap

    return bootstrap.engine()


def cmd_migrate(args: argparse.Namespace) -> int:
    from orchestrator.app import bootstrap
    from orchestrator.store import migrate
    from orchestrator.store.adoption import assess as adoption
    from orchestrator.store.adoption.run import AdoptionLockTimeout, Options

    url = bootstrap.database_url()
    if args.check:
        report = migrate.check(url)
        if args.json:
            print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
        else:
            print("\n".join(report.lines()))
        return EXIT_FOUND if report.blocked else EXIT_OK
    seen: list[str] = []

    def progress(event) -> None:  # each adoption step as it finishes, with its duration
        seen.append(event.kind)
        if event.kind in ("preflight", "after", "retry", "undone"):
            took = f"{event.seconds * 1000:9.1f} ms" if event.seconds else " " * 12
            print(f"  {took}  {event.kind.replace('after', 'done')}: {event.what}", flush=True)

    options = Options(lock_timeout_ms=int(args.lock_timeout * 1000), progress=progress)
    try:
        before, after = migrate.upgrade(url, options)
    except adoption.AdoptionBlocked as error:
        # One summary line, then the offending rows by constraint (ids named).
        print(f"chip-orchestrator: {error.reason}", file=sys.stderr)
        print("\n".join(error.details()), file=sys.stderr)
        return EXIT_REJECTED
    except AdoptionLockTimeout as error:  # a long transaction elsewhere: try again later
        print(f"chip-orchestrator: {error.reason}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    was = "unversioned: adopted the existing tables" if "preflight" in seen else "empty"
    print(
        f"database at revision {after}"
        + (" (unchanged)" if before == after else f" (was {before or was})")
    )
    return EXIT_OK


def _salvy_configured() -> bool:
    from orchestrator.app.settings import get_settings

    return bool(get_settings().salvy_api_url)


def cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.ops import render
    from orchestrator.services import cycle

    data = cycle.pool_status(_engine(), salvy_configured=_salvy_configured())
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        render.print_status(data)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from orchestrator.ops import render
    from orchestrator.services import cycle

    plan, status, _ = cycle.plan(_engine(), salvy_configured=_salvy_configured())
    if args.json:
        print(
            json.dumps({"plan": cycle.plan_as_dict(plan), "status": status}, indent=2, default=str)
        )
    else:
        render.print_plan(plan, status)
    return EXIT_OK


def _enqueue(task: str, args: list, kwargs: dict, wait: bool, timeout: float) -> int:
    from celery.exceptions import TimeoutError as CeleryTimeout

    from tasks import app

    result = app.send_task(task, args=args, kwargs=kwargs)
    task_id = result.id
    if not wait:
        print(f"queued {task} as task {task_id}")
        return EXIT_OK
    try:
        outcome = result.get(timeout=timeout)
    except CeleryTimeout:
        outcome = None
    finally:
        # Unsubscribe now: left to AsyncResult.__del__ it would run at interpreter shutdown and
        # print a traceback after our one-line error.
        result.backend.remove_pending_result(result)
        del result
    if outcome is None:
        raise TransientError(
            f"worker unavailable: no result within {timeout:g}s (task {task_id} stays queued)"
        )
    print(json.dumps(outcome, indent=2, ensure_ascii=False, default=str))
    return (
        EXIT_REJECTED
        if isinstance(outcome, dict) and outcome.get("status") == "rejected"
        else EXIT_OK
    )


def _resolve(ref: str) -> str:
    """A chip id from an id or a phone number; Rejected (one line, exit 2) if no such chip."""
    from orchestrator.store import repository

    with _engine().connect() as conn:
        return str(repository.get_chip(conn, repository.find_chip_id(conn, ref))["id"])


def cmd_replace(args: argparse.Namespace) -> int:
    from orchestrator.services.replacement import clean_reason

    chip_id = _resolve(args.chip)
    kwargs = {"reason": clean_reason(args.reason)} if args.reason else {}
    return _enqueue(task_names.REPLACE, [chip_id], kwargs, args.wait, args.timeout)


def cmd_cancel(args: argparse.Namespace) -> int:
    return _enqueue(task_names.CANCEL, [_resolve(args.chip)], {}, args.wait, args.timeout)


def cmd_check(args: argparse.Namespace) -> int:
    from orchestrator.ops import checker

    return checker.main(_engine(), as_json=args.json)


def cmd_metrics(args: argparse.Namespace) -> int:
    from orchestrator.ops import metrics

    return metrics.serve(_engine(), host=args.host, port=args.port, interval=args.interval)


def cmd_demo(args: argparse.Namespace) -> int:
    from orchestrator.app import dev_seam

    return dev_seam.run_demo(args)


class OneLineParser(argparse.ArgumentParser):
    """A bad verb, flag or value: one line on stderr and exit 2 (argparse adds the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_REJECTED, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and --help)."""
    parser = OneLineParser(
        prog="chip-orchestrator",
        description=(
            "Keep a pool of WhatsApp numbers healthy. Needs DATABASE_URL and REDIS_URL; "
            "ORCHESTRATOR_EMBEDDED=1 (or a running demo) uses embedded servers under .data/."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "migrate",
        help="apply database migrations, adopting other services' tables (safe to run twice)",
    )
    p.add_argument(
        "--check", action="store_true", help="what migrate would do and which rows block it"
    )
    p.add_argument("--json", action="store_true", help="with --check: the report as JSON")
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="longest wait for a table lock before retrying (writers queue behind it meanwhile;"
        " capped below the server's deadlock_timeout)",
    )
    p.set_defaults(fn=cmd_migrate)

    p = sub.add_parser("status", help="pool table: counts against min/max/buffer, health, trust")
    p.add_argument("--json", action="store_true", help="the seed's obter_status_pool shape")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("plan", help="what the next cycle would do (changes nothing)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_plan)

    for name, fn, text in (
        ("replace", cmd_replace, "enqueue orchestrator.replace_chip for CHIP"),
        (
            "cancel",
            cmd_cancel,
            "enqueue orchestrator.cancel_chip for CHIP (releases the number at Salvy)",
        ),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("chip", metavar="CHIP", help="chip id (uuid) or phone number")
        if name == "replace":
            p.add_argument("--reason", help="why (e.g. banned, low_trust); stored as data")
        p.add_argument("--wait", action="store_true", help="wait for the task and print its result")
        p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait with --wait")
        p.set_defaults(fn=fn)

    p = sub.add_parser("check", help="list invariant violations; exit 1 if any")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("metrics", help="serve Prometheus metrics")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=9108)
    p.add_argument("--interval", type=float, default=5.0, help="seconds between database reads")
    p.set_defaults(fn=cmd_metrics)

    p = sub.add_parser(
        "demo", help="the whole system on this machine, with a simulator and a live view"
    )
    p.add_argument("--cycle-seconds", type=float, default=5.0)
    p.add_argument(
        "--duration", type=float, default=0, help="stop after N seconds (0: until Ctrl-C)"
    )
    p.add_argument(
        "--no-live", action="store_true", help="print plain lines instead of the live view"
    )
    p.set_defaults(fn=cmd_demo)
    cli_planning.register(sub)
    cli_reports.register(sub)
    cli_pool.register(sub)
    register_webhooks(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except Rejected as error:
        print(f"chip-orchestrator: {error.reason}", file=sys.stderr)
        return EXIT_REJECTED
    except ConfigError as error:  # e.g. no DATABASE_URL: refused before anything started
        print(f"chip-orchestrator: {error}", file=sys.stderr)
        return EXIT_REJECTED
    except OrchestratorError as error:
        print(f"chip-orchestrator: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE if "unavailable" in str(error) else EXIT_REJECTED
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # one line, not a traceback, for anything we did not foresee
        print(f"chip-orchestrator: {type(error).__name__}: {_first_line(error)}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


if __name__ == "__main__":
    sys.exit(main())
