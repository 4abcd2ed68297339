"""Readable terminal output (rich) for status and plan."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from orchestrator.pool import Plan

#: Colour per pool health.
HEALTH_STYLE = {"saudavel": "bold green", "atencao": "bold yellow", "critico": "bold red"}


def status_table(status: dict) -> Table:
    """Counts per state against their targets."""
    table = Table(title=f"Pool: [{HEALTH_STYLE[status['saude']]}]{status['saude']}[/]")
    for column in ("estado", "chips", "alvo"):
        table.add_column(column, justify="right" if column != "estado" else "left")
    p, r, w = status["producao"], status["ready"], status["warming"]
    table.add_row("producao (active)", str(p["count"]), f"min {p['min']} / max {p['max']}")
    table.add_row("ready", str(r["count"]), f"min {r['min']}")
    table.add_row("warming", str(w["count"]), f"buffer {w['buffer']}")
    table.add_row("em compra (provisioning)", str(w["em_compra"]), "conta no buffer")
    table.add_row("degraded", str(status["degraded"]["count"]), "")
    table.add_row("banned", str(status["totais"]["banned"]), "")
    table.caption = f"trust medio (active): {status['totais']['trust_medio']:g}"
    return table


def print_status(status: dict, console: Console | None = None) -> None:
    """Print the status table."""
    (console or Console()).print(status_table(status))


def print_plan(plan: Plan, status: dict, console: Console | None = None) -> None:
    """Print what the next cycle would do."""
    console = console or Console()
    console.print(status_table(status))
    table = Table(title="Proximo ciclo (nada foi alterado)")
    table.add_column("acao")
    table.add_column("chips", justify="right")
    table.add_column("detalhe")
    reasons = ", ".join(sorted({r.reason for r in plan.replace}))
    table.add_row("replace", str(len(plan.replace)), reasons)
    table.add_row("warming -> ready", str(len(plan.promote_ready)), "")
    table.add_row("ready -> active", str(len(plan.promote_active)), "")
    table.add_row(
        "comprar na Salvy", str(plan.provision), f"deficit warming {plan.deficits.warming}"
    )
    table.add_row("cancelar", str(len(plan.cancel)), "auto_cancel_banned")
    if plan.storm:
        table.add_row(
            "[bold red]storm brake[/]", str(len(plan.held_for_storm)), "desconectados mantidos"
        )
    console.print(table)
