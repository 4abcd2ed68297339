"""`chip-orchestrator demo` (what `make run` runs): the whole system on this machine.

Migrates, seeds a demo pool into an empty database, starts the Salvy stand-in, a Celery worker and
beat as child processes, plays the other services with the simulator, and shows the pool live (in
plain lines when output is not a terminal). The stand-in is published under .data/ so a shell
beside the demo buys from it too. Ctrl-C or SIGTERM stops every child (and the embedded servers if
this run started them).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import redis
import requests
import sqlalchemy as sa
from celery import Celery
from rich.console import Console
from sqlalchemy.engine import make_url

from orchestrator.adapters import cycle_timing
from orchestrator.app import bootstrap
from orchestrator.app.settings import ROOT, WORKER_QUEUES_ARG, Settings, get_settings
from orchestrator.dev import demo_seed, embedded, ports, simulator
from orchestrator.dev.standin_file import published
from orchestrator.dev.supervisor import Supervisor
from orchestrator.dev.view import LiveView, PlainView
from orchestrator.domain.forecast import DEFAULT_WINDOW_DAYS
from orchestrator.ops import planning_view
from orchestrator.services import forecast
from orchestrator.services.cycle import pool_status
from orchestrator.store import migrate, repository

#: Seconds between two reads of the forecast shown under the live view.
FORECAST_SECONDS = 15
#: Token the stand-in accepts; a salvy_test_ key is Salvy's sandbox convention.
DEMO_SALVY_TOKEN = "salvy_test_demo"


def main(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C, SIGTERM or --duration; non-zero if a child process died."""
    console = Console(highlight=False)
    stop = threading.Event()
    # The demo is what the embedded servers are for: start them for any URL left unset.
    os.environ["ORCHESTRATOR_EMBEDDED"] = "1"
    get_settings.cache_clear()
    with _stop_on_signals(stop):
        settings = get_settings()
        already_up = _embedded_up(settings)
        try:
            return _run(args, settings, console, stop)
        finally:
            _stop_embedded(settings, already_up, console)


def _run(
    args: argparse.Namespace, settings: Settings, console: Console, stop: threading.Event
) -> int:
    console.print("[bold]chip-orchestrator demo[/] preparando PostgreSQL e Redis...")
    urls = bootstrap.export_urls(settings)
    get_settings.cache_clear()  # this process now sees the exported URLs too
    before, after = migrate.upgrade(urls["DATABASE_URL"])
    console.print(f"banco na revisao {after}" + (" (sem mudancas)" if before == after else ""))
    broker = make_url(urls["REDIS_URL"]).render_as_string(hide_password=True)
    console.print(f"broker (para send_task de outros servicos): [bold]{broker}[/]")
    engine = bootstrap.engine()
    seeded = demo_seed.seed_demo_pool(engine, random.Random())
    console.print(
        f"pool de demonstracao criado: {seeded} chips" if seeded else "pool existente retomado"
    )
    if stop.is_set():
        return 0
    log_dir = settings.data_dir / "logs"
    with Supervisor(log_dir, _child_env(args.cycle_seconds), ROOT) as children:
        _start_children(children, settings, args.cycle_seconds)
        console.print(f"worker, beat e Salvy stand-in iniciados; logs em {log_dir}/")
        sender = Celery("simulador", broker=bootstrap.broker_url())
        sender.conf.update(task_serializer="json", accept_content=["json"])
        try:
            with _standin_published(children, settings):
                code = _loop(args, engine, children, sender, console, stop)
        finally:
            console.print("parando worker, beat e Salvy stand-in...")
            sender.close()
    engine.dispose()
    console.print("demo encerrada" + (" com erro" if code else ""))
    return code


def _child_env(cycle_seconds: float) -> dict[str, str]:
    env = dict(os.environ, ORCHESTRATOR_CYCLE_SECONDS=f"{cycle_seconds:g}", PYTHONUNBUFFERED="1")
    if not env.get("SALVY_API_URL"):
        env["SALVY_API_TOKEN"] = DEMO_SALVY_TOKEN
    return env


def _start_children(children: Supervisor, settings: Settings, cycle_seconds: float) -> None:
    python = sys.executable
    if not children.env.get("SALVY_API_URL"):
        # Port 0: the stand-in takes one when it binds (a port chosen here could be gone by then).
        salvy = children.start(
            "salvy", [python, "-m", "orchestrator.dev.salvy_standin", "--port", "0"]
        )
        try:
            port = ports.listening_port(salvy.proc.pid)
        except RuntimeError as error:
            log = children.log_dir / "salvy.log"
            raise RuntimeError(f"Salvy stand-in did not start ({error}); see {log}") from None
        children.env["SALVY_API_URL"] = f"http://127.0.0.1:{port}"
        _wait_http(f"http://127.0.0.1:{port}/_standin/state", children)
    celery = [python, "-m", "celery", "-A", "tasks"]
    children.start(
        "worker", [*celery, "worker", "-Q", WORKER_QUEUES_ARG, "-c", "2", "-l", "WARNING"]
    )
    schedule = str(settings.data_dir / "celerybeat-schedule")
    children.start("beat", [*celery, "beat", "-l", "WARNING", "--schedule", schedule])


def _standin_published(children: Supervisor, settings: Settings) -> AbstractContextManager:
    """The stand-in this run started, published under .data/ for a shell beside the demo."""
    standin = next((c for c in children.children if c.name == "salvy"), None)
    if standin is None:  # SALVY_API_URL was given: that shell has it too
        return nullcontext()
    env = children.env
    return published(
        settings.data_dir, env["SALVY_API_URL"], env.get("SALVY_API_TOKEN"), standin.proc.pid
    )


def _loop(
    args: argparse.Namespace,
    engine: sa.Engine,
    children: Supervisor,
    sender: Celery,
    console: Console,
    stop: threading.Event,
) -> int:
    """Simulate, watch the children, redraw; returns the exit code."""
    rng = random.Random()
    deadline = time.monotonic() + args.duration if args.duration else float("inf")
    tick = max(0.5, min(2.5, args.cycle_seconds / 2))
    footer = (
        f"ciclo a cada {args.cycle_seconds:g}s | logs em {children.log_dir} | Ctrl-C para parar"
    )
    live = not args.no_live and console.is_terminal
    if not args.no_live and not live:
        console.print("saida nao e um terminal: linhas simples, o pool a cada ciclo (--no-live)")
    view = LiveView(console, footer) if live else PlainView()

    def send(name: str, task_args: list, kwargs: dict) -> None:
        sender.send_task(name, args=task_args, kwargs=kwargs)

    forecast_due = 0.0
    with view:
        while not stop.is_set() and time.monotonic() < deadline:
            if (dead := children.dead()) is not None:
                view.close()
                console.print(
                    f"[bold red]{dead.name} parou (codigo {dead.exit_code}); veja {dead.log_path}[/]"
                )
                return 1
            try:
                events = simulator.step(engine, rng, send, demo_seed.DEMO_KNOBS)
                if time.monotonic() >= forecast_due:
                    view.forecast = _forecast_line(engine)
                    forecast_due = time.monotonic() + FORECAST_SECONDS
                view.show(pool_status(engine), _recent(engine), events, _last_cycle())
            except sa.exc.DBAPIError as error:
                view.show_error(f"banco indisponivel: {str(error.orig or error).splitlines()[0]}")
            stop.wait(tick)
    return 0


def _forecast_line(engine: sa.Engine) -> str:
    """`forecast`'s own measurement and recommendation (its default window), in one line."""
    return planning_view.forecast_line(forecast.forecast(engine, window_days=DEFAULT_WINDOW_DAYS))


def _last_cycle() -> float | None:
    """When the last cycle finished (the worker records it in Redis); None if not known."""
    try:
        return cycle_timing.read(bootstrap.redis_client())[0]
    except (redis.RedisError, ValueError):
        return None


def _recent(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return repository.recent_operations(conn, 8)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP (terminal closed) set `stop` (no KeyboardInterrupt mid-transaction); a second Ctrl-C forces."""

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {
        s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _embedded_up(settings: Settings) -> dict[str, bool]:
    """Which embedded servers were already running before us (those we leave running)."""
    data = settings.data_dir
    return {
        "postgres": _pid_alive(data / "postgres" / "postmaster.pid"),
        "redis": _pid_alive(data / "redis" / "redis.pid"),
    }


def _stop_embedded(settings: Settings, already_up: dict[str, bool], console: Console) -> None:
    """Stop the embedded servers this run started; data stays in .data/ for the next run."""
    if bootstrap.engine.cache_info().currsize:
        bootstrap.engine().dispose()
        bootstrap.engine.cache_clear()
    if not settings.database_url and not already_up["postgres"]:
        embedded.stop_postgres(settings.data_dir)
        console.print(f"PostgreSQL embutido parado (dados em {settings.data_dir / 'postgres'})")
    if not settings.redis_url and not already_up["redis"]:
        embedded.stop_redis(settings.data_dir)
        console.print("Redis embutido parado")


def _pid_alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _wait_http(url: str, children: Supervisor, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and children.dead() is None:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"Salvy stand-in did not start; see {children.log_dir / 'salvy.log'}")
