"""The demo's plain view (a pipe, a log file, CI): the pool's line every cycle (pure)."""

from __future__ import annotations

from orchestrator.dev.view import PlainView
from orchestrator.domain.pool import Counts, PoolConfig
from orchestrator.domain.status import status_from

CONFIG = PoolConfig(producao_min=6, producao_max=8, ready_min=2, warmup_buffer=4)


def a_status(ready: int = 2, trust: float = 85.0) -> dict:
    return status_from(CONFIG, Counts(warming=4, ready=ready, active=6), trust)


def test_the_plain_view_prints_the_pool_once_per_cycle_even_when_nothing_changed() -> None:
    # Given the plain view, which has shown the pool after cycle 100
    said: list[str] = []
    view = PlainView(said.append)
    view.show(a_status(), [], [], cycle=100.0)
    # When it is shown the same pool again: same cycle, a later cycle, then one where only
    # the average trust wandered
    view.show(a_status(trust=84.0), [], [], cycle=100.0)
    view.show(a_status(trust=83.0), [], [], cycle=102.0)
    view.show(a_status(trust=82.0), [], [], cycle=102.0)
    # Then one line per cycle: health, counts, reserve against its target
    assert said == [
        "pool saudavel: producao 6 (min 6, max 8), ready 2 (min 2), warming 4 + 0 em compra"
        " (buffer 4), reserva 6/6, degraded 0, banned 0, trust medio 85",
        "pool saudavel: producao 6 (min 6, max 8), ready 2 (min 2), warming 4 + 0 em compra"
        " (buffer 4), reserva 6/6, degraded 0, banned 0, trust medio 83",
    ]


def test_the_plain_view_prints_the_pool_when_its_counts_change_between_cycles() -> None:
    # Given the plain view after a cycle
    said: list[str] = []
    view = PlainView(said.append)
    view.show(a_status(), [], [], cycle=100.0)
    # When a chip leaves the ready tier before the next cycle, or no cycle is known (Redis down)
    view.show(a_status(ready=1), [], ["ban: +55 11 91234-5678 banido"], cycle=100.0)
    view.show(a_status(ready=1), [], [], cycle=None)
    # Then the event and the new counts are printed, and nothing is repeated
    assert len(said) == 3
    assert said[1] == "simulador: ban: +55 11 91234-5678 banido"
    assert said[2].startswith("pool atencao: producao 6 (min 6, max 8), ready 1 (min 2),")
