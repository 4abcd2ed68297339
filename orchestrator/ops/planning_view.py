"""Terminal output of `forecast` and `simulate`, and simulate's plot (matplotlib, Agg).

matplotlib is imported inside `plot` only: nothing else pays for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table

from orchestrator.domain.whatif import Outcome
from orchestrator.errors import Rejected


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _num(value: float | int | str | None, fmt: str = "g") -> str:
    if isinstance(value, str):
        return value
    return "-" if value is None else format(value, fmt)


def print_forecast(data: Mapping, console: Console | None = None) -> None:
    """The forecast as a table, its notes below."""
    table = Table(
        title=f"Forecast: last {data['window_days']} days"
        f" ({data['history_days']} day{'s' * (data['history_days'] != 1)} of history)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("detail")
    reasons = ", ".join(f"{k} {v:.2f}" for k, v in data["by_reason"].items())
    table.add_row("replacements per day", _num(data["replacements_per_day"], ".2f"), reasons)
    table.add_row(
        "lead time purchase -> ready",
        _num(data["lead_time_days"], ".1f"),
        f"days, median of {data['lead_time_samples']} chips",
    )
    flagged = data.get("warmup_loss_flagged")
    table.add_row(
        "lost while warming",
        _pct(data["warmup_loss_rate"]) + (" (!)" if flagged else ""),
        "of numbers bought"
        + (f"; too high, planned as {_pct(data['warmup_loss_planned'])}" if flagged else ""),
    )
    rec, cur = data["recommended"], data["current"]
    target = data.get("reserve_target") or {}
    level = f"service level {data['service_level']:g}"
    table.add_row(
        "recommended",
        f"{_num(rec['warmup_buffer'])} / {_num(rec['ready_min'])}",
        f"warmup_buffer / ready_min for {level} (reserve {_num(target.get('recommended'))})",
    )
    table.add_row(
        "configured",
        f"{cur['warmup_buffer']} / {cur['ready_min']}",
        f"reserve {_num(target.get('current'))}: P(a replacement finds no ready chip)"
        f" {_pct(cur['p_no_ready'])}" + ("; auto_size on" if data.get("auto_size") else ""),
    )
    table.caption = "\n".join(data["notes"]) or None
    (console or Console()).print(table)


def forecast_line(data: Mapping) -> str:
    """The forecast in one pt-BR line (the demo's screen)."""
    rec, cur = data["recommended"], data["current"]
    if rec["warmup_buffer"] is None:
        return f"previsao: historico curto demais ({data['history_days']} dias)"
    return (
        f"previsao: {data['replacements_per_day']:.2f} substituicoes/dia, prazo"
        f" {data['lead_time_used_days']:g} d -> recomendado warmup_buffer {rec['warmup_buffer']},"
        f" ready_min {rec['ready_min']} (configurado {cur['warmup_buffer']}, {cur['ready_min']};"
        f" P(sem ready) {_pct(cur['p_no_ready'])})"
    )


#: simulate's runs: JSON key, column title.
RUNS = (
    ("seed", "seed's rule"),
    ("current", "current"),
    ("recommended", "recommended"),
    ("recommended_cancel_banned", "+ cancel banned"),
)
#: simulate's rows: label, Outcome attribute.
ROWS = (
    ("warmup_buffer", "warmup_buffer"),
    ("ready_min", "ready_min"),
    ("days below producao_min", "days_below_min"),
    ("lowest production", "lowest_production"),
    ("replacements", "replacements"),
    ("bans with no ready chip", "no_ready"),
    ("lost while warming", "lost_in_warmup"),
    ("idle ready chip-days", "idle_ready_days"),
    ("numbers bought", "bought"),
    ("numbers cancelled", "cancelled"),
    ("number-months billed", "number_months"),
    ("cost (BRL)", "cost"),
)


def print_simulation(data: Mapping, console: Console | None = None) -> None:
    """The seed's rule, ours on the current config, on the recommended one, and that with
    auto_cancel_banned on: one column each, one row per measure."""
    table = Table(
        title=(
            f"Simulated {data['days']} days: bans {data['ban_rate']:g}/active chip/day"
            f" ({data['rate_from']}), warm-up loss {_pct(data['warmup_loss'])}, seed {data['random_seed']}"
        )
    )
    table.add_column("", no_wrap=True)
    runs = [(run, title) for run, title in RUNS if run in data]
    for _, title in runs:
        table.add_column(title, justify="right")
    for label, key in ROWS:
        values = [data[run][key] for run, _ in runs]
        if key == "cost" and None in values:
            values = ["unknown"] * len(values)
        table.add_row(label, *(_num(v, ",.2f" if key == "cost" else "g") for v in values))
    table.caption = "\n".join(data["notes"]) or None
    (console or Console()).print(table)


def plot(path: str, runs: Mapping[str, Outcome], producao_min: int, title: str) -> None:
    """Production, ready and warming per day for each run side by side; producao_min marked."""
    from matplotlib.figure import Figure  # only this command pays for matplotlib (Agg canvas)

    figure = Figure(figsize=(5 * len(runs), 4.5))
    axes = figure.subplots(1, len(runs), sharey=True, squeeze=False)[0]
    for ax, (name, out) in zip(axes, runs.items(), strict=True):
        days = range(1, len(out.production) + 1)
        ax.plot(days, out.production, label="production (active)", color="tab:green")
        ax.plot(days, out.ready, label="ready", color="tab:blue")
        ax.plot(days, out.warming, label="warming + being bought", color="tab:orange")
        ax.axhline(producao_min, color="tab:red", linestyle="--", label="producao_min")
        ax.set_title(f"{name}: warmup_buffer {out.warmup_buffer}, ready_min {out.ready_min}")
        ax.set_xlabel("day")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("chips")
    axes[0].legend(loc="best")
    figure.suptitle(title)
    figure.tight_layout()
    try:
        figure.savefig(Path(path), format="png", dpi=100)
    except OSError as error:
        raise Rejected(f"cannot write the plot to {path}: {error.strerror or error}") from None
