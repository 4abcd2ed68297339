"""Slack messages in pt-BR (mrkdwn), in the seed's spirit. Pure functions returning text."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

#: Human words for the degradation reasons (motivo).
REASON_TEXT = {
    "banned": "banido",
    "low_trust": "Trust Score baixo",
    "disconnected": "desconectado",
    "flapping": "conexao instavel (flapping)",
    "salvy_blocked": "bloqueado na Salvy",
    "salvy_canceled": "cancelado na Salvy",
}


def phone(number: str | None) -> str:
    """+5511912345678 -> +55 11 91234-5678 (anything else is returned as it is)."""
    if not number:
        return "(sem numero)"
    match = re.fullmatch(r"\+?55(\d{2})(\d{4,5})(\d{4})", number)
    if not match:
        return number
    ddd, first, last = match.groups()
    return f"+55 {ddd} {first}-{last}"


def reason_text(reason: str | None) -> str:
    """The motivo as ops read it."""
    if not reason:
        return "solicitado"
    return REASON_TEXT.get(reason, reason)


def _trust(score: float) -> str:
    return f"{score:g}"


def replaced(old: Mapping, new: Mapping, moved: int | str, reason: str | None) -> str:
    """Auto-replace done (canal operacoes); moved may be a placeholder the database fills in."""
    return (
        ":arrows_counterclockwise: *Auto-Replace executado*\n"
        f"- Degradado: `{phone(old['telefone'])}` (Trust: {_trust(old['trust_score'])},"
        f" motivo: {reason_text(reason)})\n"
        f"- Promovido: `{phone(new['telefone'])}` (Trust: {_trust(new['trust_score'])})\n"
        f"- Conversas migradas: {moved}"
    )


def banned_without_ready(old: Mapping, target: Mapping | None, moved: int) -> str:
    """A banned chip had no ready replacement (canal alertas)."""
    where = (
        f"{moved} conversa(s) movida(s) para `{phone(target['telefone'])}` (ativo menos carregado)."
        if target is not None
        else "*Nenhum chip ativo saudavel para receber as conversas!*"
    )
    return (
        f":rotating_light: *CRITICO*: Chip `{phone(old['telefone'])}` banido e NAO HA CHIPS READY!\n"
        f"{where}\nPool precisa de atencao imediata."
    )


def degraded_without_ready(old: Mapping, reason: str | None) -> str:
    """A degraded chip keeps serving because there is no ready chip (canal alertas, once)."""
    return (
        f":rotating_light: *CRITICO*: Chip `{phone(old['telefone'])}` degradado"
        f" ({reason_text(reason)}, Trust: {_trust(old['trust_score'])}) mas NAO HA CHIPS READY!\n"
        "Ele continua atendendo ate haver substituto. Pool precisa de atencao imediata."
    )


def pool_critical(status: Mapping) -> str:
    """Pool health is critico (canal alertas, with cool-down)."""
    return (
        ":rotating_light: *Pool em estado CRITICO*\n"
        f"- Producao: {status['producao']['count']}/{status['producao']['min']}\n"
        f"- Ready: {status['ready']['count']}/{status['ready']['min']}\n"
        f"- Warming: {status['warming']['count']}/{status['warming']['buffer']}"
    )


def storm(disconnected: int, active: int) -> str:
    """Storm brake engaged (canal alertas, with cool-down)."""
    return (
        f":warning: *Muitos chips desconectados ao mesmo tempo*: {disconnected} de {active} ativos.\n"
        "Provavel problema no gateway (Evolution): substituicoes por desconexao suspensas;"
        " banidos e Trust baixo continuam sendo substituidos."
    )


def rehabilitated(chip: Mapping, reason: str | None, minutes: int) -> str:
    """A degraded chip back in the ready tier (canal operacoes)."""
    return (
        f":recycle: Chip `{phone(chip['telefone'])}` voltou para *READY*: apto de novo"
        f" (conectado, Trust {chip['trust_score']:g}) {minutes} min depois de sair"
        f" ({reason}). Conta na reserva: um numero a menos para comprar."
    )


def daily_purchase_cap(cap: int, resumes_at: datetime | None) -> str:
    """max_purchases_per_day reached while the reserve is short (canal alertas, once a day)."""
    when = f" ate {resumes_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if resumes_at else ""
    return (
        f":no_entry: *Limite diario de compras atingido*: {cap} numero(s) em 24 horas"
        f" (`max_purchases_per_day`). Compras pausadas{when}, embora a reserva esteja abaixo"
        " do alvo; aumente o limite (`pool_config`) se a perda justificar."
    )


def tally_drift(drift: Mapping[str, tuple[int, int]]) -> str:
    """Cached counts found wrong and corrected (canal alertas, with cool-down)."""
    lines = "\n".join(f"- {status}: {cached} -> {true}" for status, (cached, true) in drift.items())
    return (
        ":warning: *Contagem de chips por status corrigida* (contagem em cache -> real):\n"
        f"{lines}\n"
        "Linhas de `chips` mudaram sem disparar os triggers (restauracao com triggers"
        " desativados, `session_replication_role = replica`, trigger desativado). As decisoes"
        " ja usam a contagem real."
    )


def promoted_ready(chip: Mapping, days: int) -> str:
    """warming -> ready (canal operacoes)."""
    return (
        f":white_check_mark: Chip `{phone(chip['telefone'])}` promovido para *READY*"
        f" (Trust: {_trust(chip['trust_score'])}, {days} dias de aquecimento)."
    )


def promoted_active(chip: Mapping, active: int, minimum: int) -> str:
    """ready -> active (canal operacoes)."""
    return (
        f":rocket: Chip `{phone(chip['telefone'])}` promovido para *PRODUCAO*"
        f" (Trust: {_trust(chip['trust_score'])}). Producao: {active}/{minimum}."
    )


def provisioned(telefone: str, ddd: int, requested_ddd: int) -> str:
    """A number was bought (canal operacoes)."""
    fallback = f" (DDD {requested_ddd} sem estoque)" if ddd != requested_ddd else ""
    return f":new: Novo chip `{phone(telefone)}` comprado na Salvy, DDD {ddd}{fallback}. Em aquecimento."


def provision_failed(name: str, erro: str) -> str:
    """A purchase failed for good (canal alertas)."""
    return f":x: *Erro no auto-provisioning* (`{name}`): {erro}"


def cancelled(chip: Mapping, salvy_reason: str) -> str:
    """A number was released at Salvy (canal operacoes)."""
    return f":wastebasket: Chip `{phone(chip['telefone'])}` cancelado na Salvy (motivo: {salvy_reason})."


#: Why a banned number was kept instead of released (domain/release.py kept_at_salvy).
KEPT_TEXT = {
    "pending": "a linha esta sendo reativada na Salvy (pending)",
    "reactivated": "a linha foi reativada na Salvy depois de cancelada",
    "unblocked": "a linha foi desbloqueada na Salvy depois do bloqueio que a tirou de servico",
}


def release_kept(chip: Mapping, why: str) -> str:
    """A banned number due for release was kept: Salvy brought it back (canal operacoes)."""
    return (
        f":recycle: Chip `{phone(chip['telefone'])}` ({chip['status']}) *nao foi cancelado*:"
        f" {KEPT_TEXT.get(why, why)}.\nVerifique se o numero voltou ao WhatsApp; para cancelar"
        " mesmo assim, cancele na Salvy (o chip e marcado cancelado pelo webhook)."
    )


def unknown_salvy_numbers(numbers: list[str]) -> str:
    """Salvy bills numbers we have no chip for (canal alertas)."""
    listed = ", ".join(f"`{phone(n)}`" for n in numbers[:20])
    more = f" e mais {len(numbers) - 20}" if len(numbers) > 20 else ""
    return (
        f":mag: *{len(numbers)} numero(s) na Salvy sem chip no pool*: {listed}{more}.\n"
        "Nada foi cancelado automaticamente: verifique e cancele se forem sobras."
    )


def invalid_config(error: str) -> str:
    """The cycle refuses to plan on an invalid pool_config (canal alertas)."""
    return (
        f":no_entry: *pool_config invalida*: {error}. O ciclo nao vai planejar ate ser corrigida."
    )


def _setting(value: object) -> str:
    if isinstance(value, bool):
        return "ligado" if value else "desligado"
    return "NULL" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def config_changed(antes: Mapping[str, object], depois: Mapping[str, object]) -> str:
    """pool_config changed with `config set` (canal operacoes)."""
    lines = "".join(f"\n- `{k}`: {_setting(antes[k])} -> {_setting(depois[k])}" for k in depois)
    return f":gear: *Configuracao do pool alterada* (`chip-orchestrator config set`):{lines}"


#: How a stranded chip's conversations found their new chip, as ops read it.
DESTINO_TEXT = {"substituto": "substituto do chip", "menos_carregado": "ativo menos carregado"}


def conversations_migrated(chip: Mapping, target: Mapping, moved: int, destino_por: str) -> str:
    """Open conversations left on a chip that no longer serves were moved (canal operacoes)."""
    return (
        f":twisted_rightwards_arrows: {moved} conversa(s) aberta(s) no chip"
        f" `{phone(chip['telefone'])}` ({chip['status']}) movida(s) para"
        f" `{phone(target['telefone'])}` ({DESTINO_TEXT.get(destino_por, destino_por)})."
    )


def stranded_without_target(chip: Mapping, waiting: int) -> str:
    """Stranded conversations have no healthy active chip to go to (canal alertas)."""
    return (
        f":rotating_light: *CRITICO*: {waiting} conversa(s) aberta(s) no chip"
        f" `{phone(chip['telefone'])}` ({chip['status']}), que nao atende mais, e"
        " *nenhum chip ativo saudavel para recebe-las*. Pool precisa de atencao imediata."
    )


#: Back-off causes as ops read them.
PURCHASE_CAUSE_TEXT = {
    "out_of_stock": "sem estoque na Salvy",
    "refused_token": "Salvy recusou o token (SALVY_API_TOKEN)",
    "other": "erro na compra",
}


def purchases_paused(cause: str, until: datetime, failures: int, erro: str) -> str:
    """Purchases failed and are paused (canal alertas, once per cause per cool-down)."""
    return (
        f":x: *Compras na Salvy pausadas*: {PURCHASE_CAUSE_TEXT.get(cause, cause)}"
        f" ({failures} falha(s) seguida(s)).\n"
        f"- Ultimo erro: {erro[:300]}\n"
        f"- Nova tentativa apos {until.astimezone(UTC):%H:%M} UTC; a pausa cresce ate 30 min"
        " enquanto as falhas continuarem."
    )


def purchases_not_picked_up(name: str) -> str:
    """Purchase intents expired before any worker took them (canal alertas, once per cool-down)."""
    return (
        ":hourglass: *Compras nao estao sendo retiradas da fila*: a compra"
        f" `{name}` passou do prazo sem que nenhum worker a pegasse; a Salvy nao foi chamada.\n"
        "- O worker de I/O (fila `provisioning`: compras, reconciliacao, Slack) parece parado ou"
        " atrasado: verifique o `worker-io`.\n"
        "- Nada foi comprado e as compras nao foram pausadas; o ciclo registra novas compras."
    )


def no_salvy_url() -> str:
    """auto_provision is on but no SALVY_API_URL is set (canal alertas, once)."""
    return (
        ":no_entry: *auto_provision ligado mas SALVY_API_URL nao configurada*: nenhum numero"
        " sera comprado. Configure SALVY_API_URL/SALVY_API_TOKEN ou desligue auto_provision."
    )


#: What each gateway alert means, for ops.
GATEWAY_ALERT_TEXT = {
    "logged_out": "desconectado (logout no WhatsApp)",
    "temporary_ban": "banido temporariamente pelo WhatsApp",
}


def gateway_alert(chip: Mapping, alert: str, code: int | None) -> str:
    """Evolution reported a logout or a temporary ban (canal alertas, once per cool-down)."""
    what = GATEWAY_ALERT_TEXT.get(alert, alert)
    detail = f" (codigo {code})" if code else ""
    return (
        f":warning: Chip `{phone(chip['telefone'])}` ({chip['status']}) {what}{detail}.\n"
        "Reconecte a instancia no Evolution; se nao voltar, o ciclo troca o chip apos a carencia."
    )


def salvy_canceled(chip: Mapping, moved: int) -> str:
    """Salvy cancelled a number we did not cancel (canal alertas)."""
    return (
        f":rotating_light: Numero `{phone(chip['telefone'])}` foi *cancelado na Salvy* sem pedido"
        f" nosso.\nChip marcado como cancelado; {moved} conversa(s) movida(s)."
    )


def salvy_blocked_idle(chip: Mapping) -> str:
    """Salvy blocked a number that serves no conversations (canal alertas)."""
    return f":no_entry: Numero `{phone(chip['telefone'])}` ({chip['status']}) bloqueado na Salvy."


def salvy_notice(kind: str, chip: Mapping | None, account_id: str) -> str:
    """Salvy unblocked or reactivated a number (canal operacoes)."""
    what = "desbloqueado" if kind.endswith("unblocked") else "reativado"
    who = f"`{phone(chip['telefone'])}` ({chip['status']})" if chip else f"conta `{account_id}`"
    return f":information_source: Numero {who} {what} na Salvy."
