"""The demo's screen: rich.live on a terminal; plain lines when output is not one (--no-live, a
pipe, a log file, CI), the pool's health and counts once per cycle at least."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime

from rich.console import Console
from rich.live import Live

from orchestrator.ops import render


class LiveView:
    """rich.live: pool table, last operations, the simulator's last lines, the forecast."""

    def __init__(self, console: Console, footer: str) -> None:
        self.events: deque[str] = deque(maxlen=8)
        self.footer = footer
        self.forecast = ""
        self.live = Live(console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveView:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Leave the last screen as it is."""
        self.live.stop()

    def show(
        self, status: dict, operations: list, events: list[str], cycle: float | None = None
    ) -> None:
        """Redraw with the pool now; `cycle`: when the last cycle finished (epoch seconds)."""
        stamp = f"{datetime.now():%H:%M:%S}"
        self.events.extendleft(f"{stamp} {e}" for e in events)
        last = f"ultimo ciclo {datetime.fromtimestamp(cycle):%H:%M:%S} | " if cycle else ""
        footer = last + self.footer
        footer = f"{self.forecast}\n{footer}" if self.forecast else footer
        self.live.update(render.live_view(status, operations, list(self.events), footer))

    def show_error(self, line: str) -> None:
        """An error among the simulator's lines (the view keeps running)."""
        self.events.appendleft(f"[red]{line}[/]")


class PlainView:
    """One line per simulator event and per new operation; the pool each cycle and when it changes."""

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.say = say or _say
        self.seen: set[tuple] | None = None  # the first read marks history as seen
        self.last_counts = ""
        self.last_cycle: float | None = None
        self.forecast = self.last_forecast = ""

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to restore: every line is already out."""
        return None

    def show(
        self, status: dict, operations: list, events: list[str], cycle: float | None = None
    ) -> None:
        """Print what is new; `cycle`: when the last cycle finished (epoch seconds), if known."""
        for event in events:
            self.say(f"simulador: {event}")
        keys = [(op["created_at"], op["operacao"], op["telefone"]) for op in operations]
        if self.seen is None:
            self.seen = set(keys)
        for key, op in reversed(list(zip(keys, operations, strict=True))):
            if key not in self.seen:
                self.seen.add(key)
                self.say(f"operacao: {render.operation_line(op)}")
        if self.forecast != self.last_forecast:
            self.last_forecast = self.forecast
            self.say(self.forecast)
        line = render.status_line(status)
        counts = line.rsplit(", trust medio", 1)[0]  # trust wanders every step; counts matter
        new_cycle = cycle is not None and cycle != self.last_cycle
        if counts != self.last_counts or new_cycle:
            self.last_counts, self.last_cycle = counts, cycle
            self.say(line)

    def show_error(self, line: str) -> None:
        """An error, on a line of its own."""
        self.say(line)


def _say(line: str) -> None:
    print(f"{datetime.now():%H:%M:%S} {line}", flush=True)
