# agentledger's workers (sink, api; streams in later releases) against real Kafka and a
# ClickHouse server. The embedded extra (chdb, tansu) is not needed in containers.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY core core
COPY producers producers
COPY intake intake
COPY streams streams
COPY sinks sinks
COPY dashboards dashboards
COPY agentledger agentledger
RUN pip install --no-cache-dir ".[server]" && useradd --create-home agentledger
USER agentledger
ENV AGENTLEDGER_DATA_DIR=/home/agentledger/data
CMD ["agentledger", "--help"]
