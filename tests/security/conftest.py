"""Security tests reuse the fault suite's real processes: workers, the Salvy stand-in, a client."""

from tests.faults.conftest import celery_client, cluster, env, salvy

__all__ = ["celery_client", "cluster", "env", "salvy"]
