"""Readable terminal output (rich) for status, plan and the demo's live view."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from orchestrator.domain.messages import phone
from orchestrator.domain.pool import Plan

#: Colour per pool health.
HEALTH_STYLE = {"saudavel": "bold green", "atencao": "bold yellow", "critico": "bold red"}


def status_table(status: dict) -> Table:
    """Counts per state against their targets (`status`, `plan`)."""
    return _pool_table(status, [purchases_notice(status)], auto_size_notice(status))


def live_status_table(status: dict) -> Table:
    """The same table in pt-BR throughout (the demo's screen)."""
    return _pool_table(status, [aviso_compras(status)], aviso_auto_size(status))


def _pool_table(status: dict, warnings: list[str | None], sizing: str | None) -> Table:
    table = Table(title=f"Pool: [{HEALTH_STYLE[status['saude']]}]{status['saude']}[/]")
    for column in ("estado", "chips", "alvo"):
        table.add_column(column, justify="right" if column != "estado" else "left")
    p, r, w = status["producao"], status["ready"], status["warming"]
    table.add_row("producao (active)", str(p["count"]), f"min {p['min']} / max {p['max']}")
    table.add_row("ready", str(r["count"]), f"min {r['min']}")
    table.add_row("warming", str(w["count"]), f"buffer {w['buffer']}")
    table.add_row("em compra (provisioning)", str(w["em_compra"]), "conta na reserva")
    if reserva := status.get("reserva"):
        table.add_row(
            "reserva (ready aptos + warming + compra)",
            str(reserva["count"]),
            f"alvo {reserva['alvo']} (ready_min + buffer)",
        )
    table.add_row("degraded", str(status["degraded"]["count"]), "")
    table.add_row(
        "banned (numeros retidos)", str(status["totais"]["banned"]), banned_notice(status)
    )
    table.caption = f"trust medio (active): {status['totais']['trust_medio']:g}"
    for notice in filter(None, warnings):
        table.caption += f"\n[bold yellow]{notice}[/]"
    if sizing:
        table.caption += f"\n{sizing}"
    return table


def banned_notice(status: dict) -> str:
    """What the banned numbers held cost a month, and when the cycle releases them."""
    held = status["totais"].get("banned_retidos")
    if not held or not held["count"]:  # nothing held, nothing to pay
        return ""
    cost = held["custo_mensal"]
    text = "custo desconhecido" if cost is None else f"BRL {cost:,.2f}/mes"
    if not held["auto_cancel_banned"]:
        return f"{text}; auto_cancel_banned desligado: pagos ate cancelar"
    when = held["liberacao"]
    return f"{text}; liberados a partir de {when[:16].replace('T', ' ')} UTC" if when else text


def auto_size_notice(status: dict) -> str | None:
    """With auto_size on: the sizes used, configured and recommended; None when off."""
    sizing = status.get("auto_size") or {}
    if not sizing.get("on"):
        return None
    rec = sizing["recommended"] or {}
    return "auto_size: " + ", ".join(
        f"{name} {sizing['used'][name]} (configured {sizing['configured'][name]},"
        f" recommended {rec.get(name, '-')})"
        for name in ("warmup_buffer", "ready_min")
    )


def purchases_notice(status: dict) -> str | None:
    """Why purchases are held back ("purchases paused until ... (cause)"), or None."""
    return (status.get("compras") or {}).get("aviso")


def aviso_compras(status: dict) -> str | None:
    """purchases_notice in pt-BR, from the same fields of `compras`."""
    compras = status.get("compras") or {}
    estado, causa = compras.get("estado"), compras.get("causa")
    if estado == "sem_salvy":
        return "auto_provision ligado mas SALVY_API_URL nao definida: nada e comprado"
    if estado == "pausadas":
        return f"compras pausadas ate {_utc(compras['pausadas_ate'])} ({causa})"
    if estado == "limite_diario":
        return (
            f"limite diario de compras atingido ({compras['compradas_24h']} de"
            f" max_purchases_per_day {compras['limite_diario']} em 24 h): compras voltam"
            f" {'em ' + _utc(compras['pausadas_ate']) if compras['pausadas_ate'] else 'depois'}"
        )
    if compras.get("falhas_seguidas"):
        return (
            f"compras retomadas apos {compras['falhas_seguidas']} falha(s) ({causa}):"
            " uma por vez ate uma dar certo"
        )
    return None


def aviso_auto_size(status: dict) -> str | None:
    """auto_size_notice in pt-BR."""
    sizing = status.get("auto_size") or {}
    if not sizing.get("on"):
        return None
    rec = sizing["recommended"] or {}
    return "auto_size: " + ", ".join(
        f"{name} {sizing['used'][name]} (configurado {sizing['configured'][name]},"
        f" recomendado {rec.get(name, '-')})"
        for name in ("warmup_buffer", "ready_min")
    )


def _utc(moment: str) -> str:
    return f"{datetime.fromisoformat(moment).astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


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
    detail = f"reserva {plan.reserve}/{plan.reserve_target} apos este ciclo"
    if notice := purchases_notice(status):
        detail += f"; {notice}"
    table.add_row("comprar na Salvy", str(plan.provision), detail)
    table.add_row(
        "cancelar", str(len(plan.cancel)), "auto_cancel_banned: banidos, no fim do mes de cobranca"
    )
    table.add_row("migrar conversas", str(len(plan.migrate)), "conversas em chips fora de producao")
    if plan.storm:
        table.add_row(
            "[bold red]storm brake[/]", str(len(plan.held_for_storm)), "desconectados mantidos"
        )
    console.print(table)


#: pt-BR name of each `operacao` code on the demo's screen (unknown codes are shown as they are).
OPERATION_LABEL = {
    "auto_replace": "substituicao",
    "auto_provision": "compra",
    "promotion_warming_ready": "promocao a ready",
    "promotion_ready_active": "promocao a producao",
    "demotion": "rebaixamento",
    "migration": "migracao de conversas",
    "cancel": "cancelamento",
    "rehabilitation": "reabilitacao",
    "config_change": "configuracao alterada",
}

#: Colour per operation type in the live view.
OPERATION_STYLE = {
    "auto_replace": "bold red",
    "auto_provision": "cyan",
    "promotion_warming_ready": "green",
    "promotion_ready_active": "bold green",
    "cancel": "magenta",
}


def operations_table(operations: Sequence[Mapping]) -> Table:
    """The newest orchestrator_operations rows, newest first."""
    table = Table(title="Ultimas operacoes", expand=True)
    for column in ("hora", "operacao", "chip", "destino", "motivo"):
        table.add_column(column, overflow="fold" if column == "motivo" else "ellipsis")
    for op in operations:
        style = OPERATION_STYLE.get(op["operacao"], "") if op["sucesso"] else "red"
        label = operation_label(op["operacao"])
        table.add_row(
            _when(op["created_at"]),
            f"[{style}]{label}[/]" if style else label,
            phone(op["telefone"]) if op["telefone"] else "-",
            phone(op["telefone_destino"]) if op["telefone_destino"] else "-",
            op["motivo"] or "",
        )
    return table


def operation_label(code: str) -> str:
    """The operation's pt-BR name on the demo's screen."""
    return OPERATION_LABEL.get(code, code)


def _when(moment: datetime) -> str:
    """Time of day for today's operations, day and time for older ones (the seed's history)."""
    local = moment.astimezone()
    return f"{local:%H:%M:%S}" if local.date() == date.today() else f"{local:%d/%m %H:%M}"


def status_line(status: dict) -> str:
    """The pool in one plain pt-BR line (the demo's plain view)."""
    p, r, w = status["producao"], status["ready"], status["warming"]
    notice = aviso_compras(status)
    reserva = status.get("reserva")
    reserve = f"reserva {reserva['count']}/{reserva['alvo']}, " if reserva else ""
    banned = banned_notice(status)
    return (
        f"pool {status['saude']}: producao {p['count']} (min {p['min']}, max {p['max']}), "
        f"ready {r['count']} (min {r['min']}), warming {w['count']} + {w['em_compra']} em compra "
        f"(buffer {w['buffer']}), {reserve}degraded {status['degraded']['count']}, "
        f"banned {status['totais']['banned']}"
        + (f" ({banned})" if banned else "")
        + f", trust medio {status['totais']['trust_medio']:g}"
        + (f"; {notice}" if notice else "")
    )


def operation_line(op: Mapping) -> str:
    """One operation in one plain line."""
    target = f" -> {phone(op['telefone_destino'])}" if op["telefone_destino"] else ""
    outcome = "" if op["sucesso"] else " (falhou)"
    source = phone(op["telefone"]) if op["telefone"] else "-"
    return f"{operation_label(op['operacao'])}: {source}{target} {op['motivo'] or ''}{outcome}"


def live_view(
    status: dict, operations: Sequence[Mapping], events: Sequence[str], footer: str
) -> RenderableType:
    """The demo's screen: pool table, last operations, what the simulator just did."""
    world = Table(title="Simulador (os outros servicos)", expand=True, show_header=False)
    world.add_column("evento")
    for line in events or ["(nada ainda)"]:
        world.add_row(line)
    return Group(
        live_status_table(status), operations_table(operations), world, Text(footer, "dim")
    )
