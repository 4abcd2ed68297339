"""Security tests reuse the fault suite's real processes: workers, the Salvy stand-in, a client,
and a broker (Redis DB) of their own."""

from tests.faults.conftest import celery_client, cluster, env, redis_url, salvy

__all__ = ["celery_client", "cluster", "env", "redis_url", "salvy"]
