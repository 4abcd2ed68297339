"""The demo's screen in one language and one phone format, rendered from known pool states (pure)."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from orchestrator.domain.pool import Counts, PoolConfig, PurchaseGate
from orchestrator.domain.status import status_from
from orchestrator.ops import planning_view, render
from tests.support.screen import english_words, phones, phones_in_another_format

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
CONFIG = PoolConfig(
    producao_min=6, producao_max=8, ready_min=2, warmup_buffer=4, number_monthly_cost=49.9
)
COUNTS = Counts(provisioning=1, warming=3, ready=1, active=6, degraded=1, banned=2)
#: Every way purchases can be held back, as `compras` reports them, and what the screen says.
GATES = {
    "sem_salvy": (
        CONFIG,
        PurchaseGate(salvy_configured=False),
        "auto_provision ligado mas SALVY_API_URL nao definida: nada e comprado",
    ),
    "pausadas": (
        CONFIG,
        PurchaseGate(paused_until=NOW + timedelta(minutes=4), cause="out_of_stock", failures=2),
        "compras pausadas ate 2025-03-10 12:04:00 UTC (out_of_stock)",
    ),
    "limite_diario": (
        replace(CONFIG, max_purchases_per_day=3),
        PurchaseGate(bought_last_day=3, day_window_frees_at=NOW + timedelta(hours=1)),
        "limite diario de compras atingido (3 de max_purchases_per_day 3 em 24 h):"
        " compras voltam em 2025-03-10 13:00:00 UTC",
    ),
    "retomadas": (
        CONFIG,
        PurchaseGate(failures=1, cause="refused_token"),
        "compras retomadas apos 1 falha(s) (refused_token): uma por vez ate uma dar certo",
    ),
}
#: Every operacao code (the orchestrator_operations contract) and its name on the screen.
LABELS = {
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
#: One operation of every kind, phones as the chips table stores them (+55 and 11 digits).
OPERATIONS = [
    {
        "created_at": NOW - timedelta(seconds=n),
        "operacao": code,
        "telefone": f"+55119{n:08d}",
        "telefone_destino": f"+55219{n:08d}" if code == "auto_replace" else None,
        "motivo": "Trust Score 52 < 60" if code == "auto_replace" else "Pool buffer baixo",
        "sucesso": code != "cancel",
    }
    for n, code in enumerate(LABELS)
]
FORECAST = {
    "history_days": 10,
    "replacements_per_day": 0.2,
    "lead_time_used_days": 22.0,
    "recommended": {"warmup_buffer": 5, "ready_min": 2},
    "current": {"warmup_buffer": 4, "ready_min": 2, "p_no_ready": 0.031},
}


def a_status(estado: str) -> dict:
    config, gate, _ = GATES[estado]
    status = status_from(config, COUNTS, 84.5, gate=gate, now=NOW)
    sizing = {"warmup_buffer": 4, "ready_min": 2}
    recommended = {"warmup_buffer": 5, "ready_min": 2}
    return {
        **status,
        "auto_size": {"on": True, "configured": sizing, "recommended": recommended, "used": sizing},
    }


def screen(status: dict, footer: str) -> str:
    console = Console(record=True, width=240, file=io.StringIO(), color_system=None)
    console.print(render.live_view(status, OPERATIONS, ["gateway: desconectou"], footer))
    return console.export_text()


@pytest.mark.parametrize("estado", list(GATES))
def test_the_live_view_is_pt_br_throughout_with_one_phone_format(estado: str) -> None:
    # Given a pool whose purchases are held back (each way), auto_size on, banned numbers held,
    # one operation of every kind, and the forecast's line under the screen
    status = a_status(estado)
    assert status["compras"]["estado"] == ("ativas" if estado == "retomadas" else estado)
    footer = planning_view.forecast_line(FORECAST)
    # When the demo's screen and its plain lines are drawn
    text = screen(status, footer)
    plain = "\n".join([render.status_line(status), footer, *map(render.operation_line, OPERATIONS)])
    # Then no English word is left on either
    assert english_words(text) == [], text
    assert english_words(plain) == [], plain
    # And each chip's number shows once per place, always as +55 11 91234-5678
    assert len(phones(text)) == len(phones(plain)) == len(OPERATIONS) + 1
    assert phones_in_another_format(text) == phones_in_another_format(plain) == []
    # And the notices and operation names are there, in pt-BR
    assert all(label in text for label in LABELS.values())
    for op in OPERATIONS:
        assert render.operation_line(op).startswith(LABELS[op["operacao"]] + ":")
    notice = GATES[estado][2]
    assert notice in text and notice in plain
    assert "auto_size: warmup_buffer 4 (configurado 4, recomendado 5)" in text
    assert "auto_cancel_banned desligado" in text and "auto_cancel_banned desligado" in plain


def test_the_forecast_line_with_too_little_history_is_pt_br() -> None:
    empty = {**FORECAST, "recommended": {"warmup_buffer": None, "ready_min": None}}
    line = planning_view.forecast_line(empty)
    assert line == "previsao: historico curto demais (10 dias)"


def test_the_status_command_keeps_its_notices_as_status_json_writes_them() -> None:
    # The pt-BR notices are the demo screen's: `status` prints the aviso that --json carries
    status = a_status("pausadas")
    console = Console(record=True, width=240, file=io.StringIO(), color_system=None)
    console.print(render.status_table(status))
    assert status["compras"]["aviso"] in console.export_text()
