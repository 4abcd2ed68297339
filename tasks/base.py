"""The task base class: bad input answered, transient failures retried (bounded, with jitter)."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from celery import Task
from celery.utils.time import get_exponential_backoff_interval

from orchestrator.app import handlers
from orchestrator.errors import ConfigError, Poisoned, Rejected, TransientError

log = logging.getLogger(__name__)

#: Deliveries of one message before it is declared poison (a crash each time is not retried).
MAX_DELIVERIES = handlers.MAX_DELIVERIES
#: A retry is due at least this long before the broker's visibility timeout: past it, Redis
#: hands the (unacked, waiting) message to a second worker and the task runs twice.
RETRY_MARGIN_SECONDS = 60
#: kombu's visibility timeout on Redis when none is configured.
REDIS_DEFAULT_VISIBILITY = 3600
#: AMQP has no visibility timeout, but RabbitMQ closes the channel of a consumer that holds an
#: unacked message (a retry waiting for its ETA) longer than consumer_timeout (15 or 30 min by
#: version): retries there wait at most 10 minutes.
AMQP_MAX_COUNTDOWN = 600


class OrchestratorTask(Task):
    """Rejected -> {"status": "rejected"}; TransientError -> retry with backoff up to max_retries."""

    abstract = True
    #: No client-side signature check: a bad call reaches the worker and is answered
    #: {"status": "rejected", "code": "bad_arguments"} (Flower shows it) instead of an empty 500.
    typing = False
    max_retries = 5
    #: Backoff: factor * 2**retries seconds, capped, with full jitter (Celery's own helper).
    backoff_factor = 2
    backoff_max = 120
    #: Per-chip tasks count their deliveries in the Redis call that takes the chip's lock
    #: (handlers.with_chip_lock, given delivery_retries()); the others count them here first.
    counts_in_lock = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            self._signature().bind(*args, **kwargs)
        except TypeError as error:
            return {"status": "rejected", "code": "bad_arguments", "reason": str(error)}
        if not self.counts_in_lock:
            deliveries = self._count_delivery()
            if deliveries is not None and deliveries > MAX_DELIVERIES:
                return self._poison(deliveries)
        try:
            return self.run(*args, **kwargs)
        except Poisoned as error:
            return self._poison(error.deliveries)
        except Rejected as error:
            return {"status": "rejected", "code": error.code, "reason": error.reason}
        except ConfigError as error:
            return {"status": "rejected", "code": "config", "reason": str(error)}
        except TransientError as error:
            countdown = error.retry_after or get_exponential_backoff_interval(
                self.backoff_factor, self.request.retries, self.backoff_max, full_jitter=True
            )
            countdown = min(max(countdown, 0.5), self.max_countdown())
            raise self.retry(exc=error, countdown=countdown) from None

    def _signature(self) -> inspect.Signature:
        """The task function's signature, built once per task (not on every call)."""
        signature = self.__dict__.get("_run_signature")
        if signature is None:
            signature = self.__dict__["_run_signature"] = inspect.signature(self.run)
        return signature

    def max_countdown(self) -> float:
        """The longest a retry may wait on this app's broker (a Retry-After is capped to it)."""
        conf = self.app.conf
        if str(conf.broker_url or "").startswith(("amqp", "pyamqp", "librabbitmq")):
            return AMQP_MAX_COUNTDOWN
        options = conf.broker_transport_options or {}
        visibility = float(options.get("visibility_timeout") or REDIS_DEFAULT_VISIBILITY)
        return max(1.0, visibility - RETRY_MARGIN_SECONDS)

    def delivery_retries(self) -> int | None:
        """The retry number to count this delivery under (None when run eagerly: no message)."""
        if not self.request.id or self.request.is_eager:
            return None
        return self.request.retries

    def _count_delivery(self) -> int | None:
        """Count this delivery in Redis; how many so far (None: run eagerly, or Redis down)."""
        retries = self.delivery_retries()
        return None if retries is None else handlers.count_delivery(self.request.id, retries)

    def _poison(self, deliveries: int) -> dict:
        """Stop a message its worker died on every time, and tell ops."""
        self._alert(
            f"Tarefa `{self.name}` ({self.request.id}) derrubou o worker {deliveries - 1} vezes"
        )
        return {"status": "failed", "code": "poison", "reason": "worker died on every attempt"}

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Retries exhausted or an unexpected error: tell ops (once per task name per cooldown)."""
        self._alert(
            f"Tarefa `{self.name}` falhou apos {self.request.retries} tentativas: {type(exc).__name__}"
        )

    def _alert(self, texto: str) -> None:
        try:
            handlers.alert_task_failure(self.name, texto)
        except Exception:
            log.exception("could not queue the failure alert for %s", self.name)
