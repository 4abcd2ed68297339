"""Celery's Redis result backend, storing a task's result in one round trip instead of two.

Before it stores a result, Celery reads the one already stored for that task id and leaves
a SUCCESS alone (a redelivered task must not overwrite its first run's success with a later
state): a GET, then SETEX and PUBLISH in a MULTI, two round trips for every task. Here the
same rule runs inside Redis, in one script: the read, the check and the write happen in one
round trip, atomically (nothing can store between the read and the write). When the stored
value is not JSON this script can read (another writer's compressed or pickled result), it
writes nothing and Celery's own two-step store runs instead. Reading results, waiting on
them, chords and groups are Celery's, unchanged. Installed by celeryconfig under the `redis`
and `rediss` schemes, so the result backend's URL (and what Flower shows) reads as before.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.app import backends
from celery.backends import redis as celery_redis
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

#: Store ARGV[1] under KEYS[1] (kept ARGV[2] seconds; 0: no expiry) and publish it, unless the
#: stored result is a SUCCESS (0). 1 when stored; -1 when the stored value is not JSON: nothing
#: was written, the caller decides in Python.
_STORE_UNLESS_SUCCESS = """
local current = redis.call('get', KEYS[1])
if current then
    local ok, meta = pcall(cjson.decode, current)
    if not ok or type(meta) ~= 'table' then return -1 end
    if meta['status'] == 'SUCCESS' then return 0 end
end
if tonumber(ARGV[2]) > 0 then
    redis.call('setex', KEYS[1], ARGV[2], ARGV[1])
else
    redis.call('set', KEYS[1], ARGV[1])
end
redis.call('publish', KEYS[1], ARGV[1])
return 1
"""
#: What the script answers when it could not read the stored value.
_UNREADABLE = -1


class RedisBackend(celery_redis.RedisBackend):
    """Celery's RedisBackend; a task's result stored in one round trip (_store_result)."""

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError(
                "value too large for Redis backend", state=state, task_id=task_id
            )
        expires = self.failure_expires if state == states.FAILURE else None
        expires = self.expires if expires is None else expires
        key = self.get_key_for_task(task_id)
        stored = self.ensure(self._store_unless_success, (key, value, int(expires or 0)))
        if stored == _UNREADABLE:
            return super()._store_result(task_id, result, state, traceback, request, **kwargs)
        return result

    def _store_unless_success(self, key: str | bytes, value: str | bytes, expires: int) -> int:
        script = self.__dict__.get("_store_script")
        if script is None or script.registered_client is not self.client:
            script = self.__dict__["_store_script"] = self.client.register_script(
                _STORE_UNLESS_SUCCESS
            )
        return int(script(keys=[key], args=[value, expires]))


def install() -> None:
    """Celery apps of this process with a redis:// or rediss:// result backend use RedisBackend
    above (Celery resolves the scheme when an app first touches its backend)."""
    for scheme in ("redis", "rediss"):
        backends.BACKEND_ALIASES[scheme] = f"{__name__}:RedisBackend"
