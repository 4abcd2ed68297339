"""Adopting tables other services created: what exists, the plan towards 0001, running it."""
