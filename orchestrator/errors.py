"""The one exception tree of chip-orchestrator.

Services raise these; adapters translate library exceptions (SQLAlchemy, redis, requests,
slack-sdk) into them at the boundary, so a task only has to tell "bad input" from "try again".
"""


class OrchestratorError(Exception):
    """Raised for any failure this package knows about."""


class Rejected(OrchestratorError):
    """Raised when input or state makes a request impossible; never retried, changes nothing."""

    def __init__(self, reason: str, *, code: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class TransientError(OrchestratorError):
    """Raised when a dependency failed in a way that may pass (database, Redis, Salvy, Slack)."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class ConfigError(OrchestratorError):
    """Raised when pool_config or the environment is missing or nonsensical."""


class PurchaseInDoubt(TransientError):
    """Raised when a purchase call failed in a way that may still have bought the number.

    A timeout or a 5xx after the POST was sent: the number may show up in Salvy's list later,
    so the retry waits before it looks the name up, and nobody else buys meanwhile.
    """


class Poisoned(OrchestratorError):
    """Raised when a message came back more times than a task may run it (its worker died on it)."""

    def __init__(self, deliveries: int) -> None:
        super().__init__(f"delivered {deliveries} times")
        self.deliveries = deliveries
