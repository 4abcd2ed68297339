"""The outside world, its errors translated into orchestrator.errors: Salvy, Slack, Redis."""
