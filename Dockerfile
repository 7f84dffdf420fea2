# Redpoll service image. In docker-compose it talks to a ClickHouse server
# (REDPOLL_CLICKHOUSE_URL=http://...); without that it uses embedded chDB in /project/.redpoll.
#
# Base image pinned to a full patch version. Release pipelines should also pin its digest
# (python:3.11.11-slim-bookworm@sha256:...) so a rebuild cannot pick up a different image.
FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/redpoll
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir ".[kafka]"
# An unprivileged user; it owns only the state dir (embedded data, lock file). The code and
# the project files stay root-owned, so the server cannot rewrite them.
RUN groupadd --system --gid 10001 redpoll \
 && useradd --system --uid 10001 --gid redpoll --create-home --shell /usr/sbin/nologin redpoll \
 && mkdir -p /project/.redpoll \
 && chown redpoll:redpoll /project/.redpoll
# The project: every part of redpoll.testing.PROJECT_PARTS that exists in the repository
# (tests/unit/test_compose.py checks this list). endpoints/ includes endpoints/tests.
COPY sql /project/sql
COPY materialized_views /project/materialized_views
COPY endpoints /project/endpoints
COPY migrations /project/migrations
COPY kafka /project/kafka
ENV REDPOLL_PROJECT_DIR=/project REDPOLL_HOST=0.0.0.0 REDPOLL_PORT=8000
USER redpoll
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v0/health')"
CMD ["sh", "-c", "redpoll migrate up && exec redpoll serve"]
