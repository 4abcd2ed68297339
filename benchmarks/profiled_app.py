"""Today's worker with cProfile on, for `benchmarks.swap_floor --profile-worker`.

`celery -A benchmarks.profiled_app worker` with SWAP_PROFILE_DIR set: the main process and every
prefork child profile themselves on CPU time (time.process_time) from start to shutdown and write
`<pid>.prof` there. Profiling slows Python code down (each call costs more), so read the shares,
not the milliseconds.
"""

from __future__ import annotations

import cProfile
import os
import time

from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from tasks import app

__all__ = ["app"]

_PROFILE: list[cProfile.Profile] = []


def _start(**_: object) -> None:
    _PROFILE[:] = [cProfile.Profile(time.process_time)]
    _PROFILE[0].enable()


def _stop(**_: object) -> None:
    if _PROFILE and os.environ.get("SWAP_PROFILE_DIR"):
        _PROFILE[0].disable()
        _PROFILE[0].dump_stats(os.path.join(os.environ["SWAP_PROFILE_DIR"], f"{os.getpid()}.prof"))


worker_init.connect(_start, weak=False)
worker_shutdown.connect(_stop, weak=False)
worker_process_init.connect(_start, weak=False)
worker_process_shutdown.connect(_stop, weak=False)
