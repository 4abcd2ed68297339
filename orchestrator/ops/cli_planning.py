"""`chip-orchestrator forecast` and `simulate`: capacity planning verbs (docs/capacity.md).

ops/cli.py calls `register(sub)`; errors are raised as Rejected / ConfigError and printed by
cli.main as one line with a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, fields, replace

from orchestrator.domain import forecast as fc
from orchestrator.domain import whatif
from orchestrator.domain.pool import PoolConfig
from orchestrator.errors import ConfigError, Rejected

#: Bans per active chip per day when neither --ban-rate nor a usable history says otherwise.
DEFAULT_BAN_RATE = 0.02
#: Values --set accepts for a true / false field.
TRUE, FALSE = ("true", "on", "yes", "1"), ("false", "off", "no", "0")


def _engine_or_none():
    """The database's engine, or None when none is configured (simulate runs without one)."""
    from orchestrator.app import bootstrap
    from orchestrator.store import db

    try:
        url = bootstrap.database_url()
    except ConfigError:
        return None
    return db.create_engine(url)


def _engine():
    from orchestrator.app import bootstrap

    return bootstrap.engine()


def cmd_forecast(args: argparse.Namespace) -> int:
    from orchestrator.ops import planning_view
    from orchestrator.services import forecast

    data = forecast.forecast(
        _engine(), window_days=args.window_days, service_level=args.service_level
    )
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        planning_view.print_forecast(data)
    return 0


def parse_overrides(config: PoolConfig, pairs: Sequence[str]) -> PoolConfig:
    """--set name=value ...: the config with those fields changed; Rejected (one line) if bad."""
    kinds = {f.name: str(f.type) for f in fields(PoolConfig)}
    values: dict[str, object] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name:
            raise Rejected(f"--set {pair!r}: expected name=value")
        if name not in kinds:
            raise Rejected(f"--set {name}: unknown pool_config field (known: {', '.join(kinds)})")
        values[name] = _parse(name, raw, kinds[name])
    changed = replace(config, **values)
    if problems := changed.problems():
        raise Rejected("--set makes pool_config invalid: " + "; ".join(problems))
    return changed


def _parse(name: str, raw: str, kind: str) -> object:
    """One --set value by its field's type."""
    low = raw.lower()
    if kind == "bool":
        if low in TRUE + FALSE:
            return low in TRUE
        raise Rejected(f"--set {name}={raw}: not true or false")
    if "None" in kind and low in ("null", "none", ""):
        return None
    try:
        value = int(raw) if kind == "int" else float(raw)
    except ValueError:
        kind_name = "an integer" if kind == "int" else "a number"
        raise Rejected(f"--set {name}={raw}: not {kind_name}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise Rejected(f"--set {name}={raw}: not a finite number")
    return value


def _world(
    args: argparse.Namespace,
) -> tuple[PoolConfig, whatif.StartPool | None, dict, list[str]]:
    """The config, the starting pool, the rates and notes: from the database when there is one."""
    from orchestrator.services import forecast

    notes: list[str] = []
    engine = _engine_or_none()
    if engine is None:
        if args.from_history:
            raise Rejected("--from-history needs a database: set DATABASE_URL")
        config = parse_overrides(PoolConfig(), args.set)
        notes.append("no database configured: PoolConfig defaults; each run starts at its targets")
        return config, None, _rates(args, None, config), notes
    try:
        stored, counts, history = forecast.pool_now(engine)
    finally:
        engine.dispose()
    config = parse_overrides(stored, args.set)
    start = whatif.StartPool.spread(
        counts.active, counts.ready, counts.warming, config.warmup_days, counts.provisioning
    )
    notes.append(
        f"starting pool from the database: {counts.active} active, {counts.ready} ready,"
        f" {counts.warming} warming, {counts.provisioning} being bought"
    )
    return config, start, _rates(args, history, config), notes


def _rates(args: argparse.Namespace, history: fc.History | None, config: PoolConfig) -> dict:
    """Ban rate per active chip, warm-up loss and purchase delay, and where they came from."""
    active = max(1, min(config.producao_min, config.producao_max))
    if args.ban_rate is not None:
        rates = {"ban_rate": args.ban_rate, "rate_from": "--ban-rate"}
    elif history is not None and history.demand is not None:
        rates = {"ban_rate": history.demand / active, "rate_from": "history"}
    elif args.from_history:
        days = 0 if history is None else history.history_days
        raise Rejected(
            f"--from-history: too little history ({days} days, {fc.MIN_HISTORY_DAYS} needed)"
        )
    else:
        rates = {"ban_rate": DEFAULT_BAN_RATE, "rate_from": "default"}
    use_history = rates["rate_from"] == "history"
    loss = history.loss_rate if use_history and history is not None else None
    lead = history.lead_time_days if use_history and history is not None else None
    rates["warmup_loss"] = args.warmup_loss if args.warmup_loss is not None else (loss or 0.0)
    rates["purchase_days"] = (
        args.purchase_days
        if args.purchase_days is not None
        else max(0.0, (lead or config.warmup_days) - config.warmup_days)
    )
    return rates


def cmd_simulate(args: argparse.Namespace) -> int:
    from orchestrator.ops import planning_view

    config, start, rates, notes = _world(args)
    scenario = whatif.Scenario(
        days=args.days,
        ban_rate=rates["ban_rate"],
        warmup_loss=rates["warmup_loss"],
        purchase_days=rates["purchase_days"],
        cycles_per_day=args.cycles_per_day,
        seed=args.seed,
    )
    if problems := scenario.problems():
        raise Rejected("simulate: " + "; ".join(problems))
    runs = whatif.compare(config, scenario, start)
    if config.number_monthly_cost is None:
        notes.append("cost unknown: number_monthly_cost is not set (--set number_monthly_cost=20)")
    data = {
        "days": args.days,
        "random_seed": args.seed,  # `seed` is the seed's-rule run
        "producao_min": config.producao_min,
        "service_level": config.service_level,
        **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in rates.items()},
        "cycles_per_day": args.cycles_per_day,
        "notes": notes,
        **{name: asdict(out) for name, out in runs.items()},
    }
    if args.plot:
        title = f"{args.days} days, bans {scenario.ban_rate:g}/active chip/day, seed {args.seed}"
        planning_view.plot(args.plot, runs, config.producao_min, title)
        notes.append(f"plot written to {args.plot}")
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        planning_view.print_simulation(data)
    return 0


def _number(text: str, kind: type, what: str) -> float:
    """text as int or float; argparse's one-line error names the value, not this function."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text[:32]!r}") from None


def _probability(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1, exclusive")
    return value


def _positive_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> float:
    value = _number(text, float, "a number")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("must be a number >= 0")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add `forecast` and `simulate` to the command line."""
    p = sub.add_parser(
        "forecast",
        help="replacements per day, lead time, warm-up loss -> the buffer to hold (Poisson)",
    )
    p.add_argument("--service-level", type=_probability, metavar="P", help="default: pool_config")
    p.add_argument("--window-days", type=_positive_int, default=fc.DEFAULT_WINDOW_DAYS, metavar="N")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_forecast)

    p = sub.add_parser(
        "simulate",
        help="play the pool forward with the cycle's decisions: the seed's rule, current,"
        " recommended (and with auto_cancel_banned)",
    )
    p.add_argument("--days", type=_positive_int, default=90, metavar="N")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument(
        "--ban-rate", type=_non_negative, metavar="R", help="bans per active chip per day"
    )
    rate.add_argument(
        "--from-history", action="store_true", help="the rate, loss and lead time measured"
    )
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a pool_config field for this run (repeatable)",
    )
    p.add_argument("--warmup-loss", type=_non_negative, metavar="Q", help="share lost warming")
    p.add_argument("--purchase-days", type=_non_negative, metavar="D", help="purchase -> warming")
    p.add_argument("--cycles-per-day", type=_positive_int, default=24, metavar="K")
    p.add_argument("--plot", metavar="FILE.png", help="draw production/ready/warming per day")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_simulate)
