# The checkpoint-exporter image: `checkpoint-exporter serve` by default, any subcommand otherwise
# (docker-compose.yml runs `loadtest` from it too).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CHECKPOINT_EXPORTER_LOG_FORMAT=json

WORKDIR /src
# pyproject.toml names README.md as the package's long description, so the build needs it.
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install . \
    && rm -rf /src \
    && groupadd --system --gid 10001 exporter \
    && useradd --system --uid 10001 --gid exporter --create-home --home-dir /home/exporter \
       --shell /usr/sbin/nologin exporter

# A numeric UID, so `runAsNonRoot` checks (Kubernetes) can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/exporter

EXPOSE 9877

# Asks the running server for /api/health/checkpointer at its own listen address:
# healthy and degraded pass, unhealthy or no answer fails.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["checkpoint-exporter", "healthcheck"]

ENTRYPOINT ["checkpoint-exporter"]
CMD ["serve"]
