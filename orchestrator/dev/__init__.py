"""The demo machinery: never imported by a production path (see orchestrator/app/dev_seam.py)."""
