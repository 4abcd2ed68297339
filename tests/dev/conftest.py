"""The demo's tests run the CLI as a user does: they share the command line tests' queue hygiene."""

from tests.ops.cli.conftest import empty_queues

__all__ = ["empty_queues"]
