"""Terminal output (rich) of `report` and `history`; their --json is the dict itself."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.domain.messages import phone

#: Colour per event in a history.
EVENT_STYLE = {
    "auto_replace": "bold red",
    "auto_provision": "cyan",
    "promotion_warming_ready": "green",
    "promotion_ready_active": "bold green",
    "cancel": "magenta",
    "migration": "yellow",
    "demotion": "red",
}


def report_table(data: dict) -> Table:
    """One month's numbers: purchases, cancellations, replacements by reason, moves, cost."""
    period = data["period"]
    title = f"Relatorio {data['month']} (UTC)"
    if period["in_progress"]:
        title += " - mes em curso, ate agora"
    table = Table(title=title)
    table.add_column("item")
    table.add_column("valor", justify="right")
    table.add_row("numeros comprados", str(data["bought"]))
    table.add_row("compras que falharam", str(data["purchase_failures"]))
    table.add_row("numeros cancelados", str(data["cancelled"]))
    table.add_row("substituicoes", str(data["replaced"]["total"]))
    for reason, n in data["replaced"]["by_reason"].items():
        table.add_row(f"  motivo: {escape(reason)}", str(n))
    table.add_row("conversas movidas", str(data["conversations_moved"]))
    cost = data["cost"]
    table.add_row("numeros cobrados no mes", str(cost["numbers_billed"]))
    if cost["total"] is None:
        table.add_row("custo", "desconhecido")
        table.caption = cost["unknown_reason"]
    else:
        table.add_row(
            "custo",
            f"{cost['currency']} {cost['total']:,.2f} "
            f"({cost['numbers_billed']} x {cost['monthly_cost']:,.2f})",
        )
        table.caption = "cada numero mantido em algum momento do mes conta um mes inteiro"
    banned = data.get("banned_held")
    if banned is not None:
        spent = (
            "desconhecido"
            if banned["cost"] is None
            else f"{banned['currency']} {banned['cost']:,.2f}"
        )
        table.add_row("  dos quais banidos (numeros mortos)", f"{banned['count']} ({spent})")
    return table


def history_table(data: dict) -> Table:
    """One chip's events, newest first."""
    chip = data["chip"]
    table = Table(
        title=f"Historico de {phone(chip['telefone'])} ({chip['id']}), agora {chip['status']}"
    )
    table.add_column("quando (UTC)", no_wrap=True)
    table.add_column("evento", no_wrap=True)
    table.add_column("outro chip", no_wrap=True)
    table.add_column("detalhe", overflow="fold")
    for event in data["events"]:
        table.add_row(event["at"][:19].replace("T", " "), *_event_cells(event))
    if data["older_operations_not_shown"]:
        table.caption = "operacoes mais antigas omitidas (use --limit)"
    return table


def _event_cells(event: dict) -> tuple[str, str, str]:
    if event["kind"] == "state":
        status = f" (status atual: {event['status']})" if "status" in event else ""
        return f"estado: {event['state']}", "", status.strip()
    style = EVENT_STYLE.get(event["operacao"], "") if event["sucesso"] else "red"
    name = f"[{style}]{event['operacao']}[/]" if style else event["operacao"]
    arrow = "->" if event["role"] == "origin" else "<-"
    other = f"{arrow} {phone(event['other_telefone'])}" if event["other_chip_id"] else ""
    detail = escape(event["motivo"] or "")
    if not event["sucesso"]:
        detail += f" [red](falhou: {escape(event['erro'] or '')})[/]"
    return name, other, detail


def print_report(data: dict, console: Console | None = None) -> None:
    """Print the month's table."""
    (console or Console()).print(report_table(data))


def print_history(data: dict, console: Console | None = None) -> None:
    """Print the chip's table."""
    (console or Console()).print(history_table(data))
