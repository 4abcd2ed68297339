"""The webhook receiver (ASGI, Starlette on uvicorn): parse, verify, record, enqueue.

An entry point like ops/: it reaches the system through app/ (wiring, services) and tasks/ (the
Celery app it enqueues with). `chip-orchestrator webhooks` serves it (cli.py).
"""
