"""Ports the servers pick themselves, at bind time, for the tests, benchmarks and the demo.

Choosing a "free" port first and handing it to a child that binds it a second later races every
other process on the machine (another test run, an outgoing connection given that port): the
child then fails to bind, or a client talks to somebody else's server. So a child is started on
port 0 and the port it was given is read from the kernel, from its listening socket.
"""

from __future__ import annotations

import socket
import time

import psutil

#: Seconds a child has to start listening (Python start-up on a loaded 2-core machine included).
LISTEN_TIMEOUT = 60.0


def listening_port(pid: int, timeout: float = LISTEN_TIMEOUT) -> int:
    """The TCP port process pid (or a child of it) listens on, once it does.

    RuntimeError if the process exits first or does not listen within timeout (a failure bound).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                raise psutil.NoSuchProcess(pid)
            for each in (proc, *proc.children(recursive=True)):
                for conn in each.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN:
                        return conn.laddr.port
        except psutil.NoSuchProcess:
            raise RuntimeError(f"process {pid} exited before it listened on a port") from None
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} listened on no port within {timeout:g}s")
        time.sleep(0.05)


class ClosedPort:
    """A loopback port bound here and never listened on: connecting to it is refused.

    Held for as long as the object lives, so no other process can start listening there.
    """

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    def close(self) -> None:
        """Release the port."""
        self._sock.close()
