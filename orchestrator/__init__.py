"""chip-orchestrator: keeps a pool of WhatsApp numbers ("chips") healthy."""

__version__ = "0.1.0"
