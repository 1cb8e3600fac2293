# servicenow-worker: Camunda 8 job worker for the ServiceNow Table API.
#
#   scripts/build-image -t servicenow-worker      # docker build, with the version and commit labels
#   docker run --rm -e ZEEBE_ADDRESS=... -e SERVICENOW_URL_TEMPLATE=... servicenow-worker
#
# Stage 1 builds the wheel and installs it with its dependencies into a virtual environment;
# stage 2 is the slim base plus that environment, run as an unprivileged user. Settings come from
# the environment (docs/operations.md); the image holds no credentials.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# uv installs exactly uv.lock's versions (docs/dependencies.md); pyproject.toml's [tool.uv]
# required-version makes any other uv refuse to run, so this pin cannot drift from the lock's.
ARG UV_VERSION=0.13.8
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
WORKDIR /src
RUN python -m pip install --no-cache-dir "uv==${UV_VERSION}"
# The locked dependencies first, in a layer of their own that changes only with the lock; then
# the project itself, as a wheel (not editable). --locked: a lock that disagrees with
# pyproject.toml fails the build instead of being re-resolved. The environment has no pip or
# setuptools: it holds only what runs, with the otel extra, so that traces need no other image
# (loaded only when the OTEL_* variables ask for them).
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-install-project --no-editable --extra otel --python python
COPY src ./src
RUN uv sync --locked --no-editable --extra otel --python python

FROM ${PYTHON_IMAGE}
# scripts/build-image passes pyproject.toml's version, the commit and its date.
ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="servicenow-worker" \
      org.opencontainers.image.description="Camunda 8 job worker (job type servicenow:1): create, read, update and delete records in any ServiceNow table" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/operations.md"
RUN groupadd --system --gid 10001 worker \
    && useradd --system --uid 10001 --gid worker --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin worker
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEALTH_PORT=9464
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 9464
# The worker traps SIGTERM itself (it runs as PID 1 and spawns no children): it stops taking jobs,
# finishes those in flight within WORKER_SHUTDOWN_GRACE_PERIOD (30 s) and exits 0. Give
# `docker stop` more than that: `docker stop -t 40`, compose `stop_grace_period: 40s`.
STOPSIGNAL SIGTERM
# Readiness: the gateway answered recently and the worker takes jobs. Standard library only, no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "servicenow_worker.health", "ready"]
ENTRYPOINT ["servicenow-worker"]
