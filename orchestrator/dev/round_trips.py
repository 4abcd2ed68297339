"""A TCP proxy in front of PostgreSQL that counts round trips on the wire.

A client of PostgreSQL waits for the server each time it sends a Sync (the end of an
extended-protocol statement, or of a pipeline) or a simple Query (psycopg's BEGIN and
COMMIT): each one is a round trip, however many statements it closes. The proxy reads the
client's messages as they pass (the frontend protocol: a type byte and a length) and counts
those two; every byte is relayed unchanged.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

import sqlalchemy as sa

#: Client messages the server answers with ReadyForQuery: Sync and a simple Query.
WAITS = (b"S", b"Q")
#: The untyped first messages of a connection: SSLRequest / GSSENCRequest, then the startup.
_SSL_OR_GSS = (80877103, 80877104)


class _ClientStream:
    """The frontend messages of one connection, parsed as bytes arrive."""

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False

    def feed(self, data: bytes) -> int:
        """Take bytes the client sent; how many Sync/Query messages they completed."""
        self._buffer += data
        waits = 0
        while True:
            if not self._started:
                if len(self._buffer) < 8:
                    return waits
                length, code = struct.unpack("!ii", self._buffer[:8])
                if len(self._buffer) < length:
                    return waits
                self._buffer = self._buffer[length:]
                self._started = code not in _SSL_OR_GSS
                continue
            if len(self._buffer) < 5:
                return waits
            kind, length = self._buffer[:1], struct.unpack("!i", self._buffer[1:5])[0]
            if len(self._buffer) < 1 + length:
                return waits
            self._buffer = self._buffer[1 + length :]
            waits += kind in WAITS


class RoundTripProxy:
    """Listens on 127.0.0.1 (a free port) and relays each connection to PostgreSQL at (host,
    port): a TCP address, or a Unix socket's directory (a host starting with "/") and port."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.round_trips = 0
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> int:
        """The round trips counted so far; counting starts again from 0."""
        with self._lock:
            counted, self.round_trips = self.round_trips, 0
        return counted

    def close(self) -> None:
        """Stop accepting (relayed connections end when their ends close)."""
        self._closing = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = _connect(*self._upstream)
            for sock in (client, upstream):
                if sock.family != socket.AF_UNIX:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = _ClientStream()
            threading.Thread(
                target=self._pump, args=(client, upstream, stream), daemon=True
            ).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, stream: _ClientStream | None) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if stream is not None:
                    # Counted before relaying: the server cannot answer what it has not seen.
                    waits = stream.feed(data)
                    with self._lock:
                        self.round_trips += waits
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _connect(host: str, port: int) -> socket.socket:
    if not host.startswith("/"):
        return socket.create_connection((host, port))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(f"{host}/.s.PGSQL.{port}")
    return sock


@contextlib.contextmanager
def round_trip_proxy(url: str | sa.URL) -> Iterator[tuple[RoundTripProxy, str]]:
    """A RoundTripProxy in front of the server a SQLAlchemy URL reaches, and the URL through it.

    Where the server is comes from a connection made with the URL (a TCP address, or the
    Unix socket an embedded server listens on, given as `?host=/dir`).
    """
    url = sa.make_url(url)
    probe = sa.create_engine(url, poolclass=sa.NullPool)
    with probe.connect() as conn:
        info = conn.connection.driver_connection.info
        host, port = info.host, info.port
    probe.dispose()
    proxy = RoundTripProxy(host, port)
    query = {k: v for k, v in url.query.items() if k not in ("host", "port")}
    through = url.set(host="127.0.0.1", port=proxy.port, query=query)
    try:
        yield proxy, through.render_as_string(hide_password=False)
    finally:
        proxy.close()
