# Redpoll service image. In docker-compose it talks to a ClickHouse server
# (REDPOLL_CLICKHOUSE_URL=http://...); without that it uses embedded chDB in /project/.redpoll.
FROM python:3.11-slim
WORKDIR /srv/redpoll
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir ".[kafka]"
COPY sql /project/sql
COPY materialized_views /project/materialized_views
COPY endpoints /project/endpoints
COPY migrations /project/migrations
ENV REDPOLL_PROJECT_DIR=/project REDPOLL_HOST=0.0.0.0 REDPOLL_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v0/health')"
CMD ["sh", "-c", "redpoll migrate up && exec redpoll serve"]
