"""kombu's Redis transport, reusing one client per connection pool for its bookkeeping.

kombu's Redis channel builds a new `redis.Redis` client for each message it delivers and each
ack (to record and clear the unacknowledged message); with redis-py 8 building one copies ~170
response callbacks, ~0.15 ms of the worker's main process per client, twice per task. The client
is a handle on the channel's connection pool (the connections, and their reconnects, are the
pool's), so one is kept per pool and built again only when the channel replaces its pool.
Installed by celeryconfig under the `redis` scheme when the broker is Redis (install()).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis
from kombu import transport as kombu_transport
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    """A Redis channel whose bookkeeping client is built once per connection pool."""

    _bookkeeping: tuple[object, redis.Redis] | None = None

    @contextlib.contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        """The given client, else this pool's client (built on first use)."""
        if client:
            yield client
            return
        pool = self.pool
        if self._bookkeeping is None or self._bookkeeping[0] is not pool:
            self._bookkeeping = (pool, self._create_client())
        yield self._bookkeeping[1]


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with Channel above."""

    Channel = Channel


def install() -> None:
    """kombu connections of this process with a redis:// URL use Transport above.

    kombu remembers the class a name resolved to: a `redis` connection made earlier in this
    process (another client's) would keep kombu's own, so that memory is dropped too.
    """
    TRANSPORT_ALIASES["redis"] = f"{__name__}:Transport"
    getattr(kombu_transport, "_transport_cache", {}).pop("redis", None)
