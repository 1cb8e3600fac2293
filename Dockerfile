# servicenow-worker: Camunda 8 job worker for the ServiceNow Table API.
#
#   docker build -t servicenow-worker .
#   docker run --rm -e ZEEBE_ADDRESS=... -e SERVICENOW_URL_TEMPLATE=... servicenow-worker
#
# Stage 1 builds the wheel and installs it with its dependencies into a virtual environment;
# stage 2 is the slim base plus that environment, run as an unprivileged user. Settings come from
# the environment (docs/operations.md); the image holds no credentials.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The wheel's own dependencies are resolved by pip from pyproject.toml's ranges (the project has
# no lock file); the build backend comes through pip's build isolation. The environment is made
# without pip and setuptools and filled by the build stage's pip, so it holds only what runs.
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
    && python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install /dist/*.whl

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
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
