# One image for every EstateWatch service: `docker run IMAGE ingest`, `... rules`, `... simulate`.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY devices ./devices
COPY store ./store
COPY runtime ./runtime
COPY stack ./stack
COPY sim ./sim
COPY ingest ./ingest
COPY rules ./rules
COPY bench ./bench
COPY grafana ./grafana
COPY api ./api
COPY load ./load
COPY estatewatch ./estatewatch
COPY estates ./estates
RUN pip install ".[postgres]" && useradd --system --uid 10001 --home /app estatewatch \
    && mkdir -p /var/lib/estatewatch && chown estatewatch /var/lib/estatewatch

USER estatewatch
ENV ESTATEWATCH_RUN_DIR=/var/lib/estatewatch
ENTRYPOINT ["estatewatch"]
CMD ["--help"]
