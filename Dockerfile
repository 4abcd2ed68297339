# syntax=docker/dockerfile:1
# chip-orchestrator: one image for migrate, worker, beat, flower, metrics, webhooks and the demo's
# Salvy stand-in.
#
# The project is installed *editable* from /app on purpose: orchestrator.app.settings.ROOT is
# the package's parent directory, and `chip-orchestrator migrate` reads ROOT/migrations. A plain
# `pip install .` would move the package into site-packages and lose migrations/.

FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# Dependencies first, against empty stand-ins for the code, so editing code keeps this layer cached.
# No extras: the `dev` extra (embedded PostgreSQL and Redis, for `make run` and `make test`) stays
# out of the image, so a container without DATABASE_URL stops at start with one line.
COPY pyproject.toml README.md ./
RUN mkdir orchestrator tasks \
    && touch orchestrator/__init__.py tasks/__init__.py celeryconfig.py \
    && pip install -e . \
    && rm -rf orchestrator tasks celeryconfig.py

FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    ORCHESTRATOR_DATA_DIR=/home/app/.data
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Same path as in the build stage: the editable install's finder maps the packages to /app.
# Owned by root and read-only for the app user. Compose's beat (RedBeat) keeps its schedule in
# Redis; the default scheduler needs a writable file: `beat --schedule /tmp/celerybeat-schedule`.
COPY pyproject.toml README.md celeryconfig.py ./
COPY orchestrator/ orchestrator/
COPY tasks/ tasks/
COPY migrations/ migrations/
USER app
# Flower 5555, the webhook receiver 8080, the demo's Salvy stand-in 8099, metrics 9108.
EXPOSE 5555 8080 8099 9108
# Without a command: one worker on every queue. Compose runs a swap worker and an I/O worker.
CMD ["celery", "-A", "tasks", "worker", "-Q", "orchestrator,provisioning,celery", "-l", "INFO"]
