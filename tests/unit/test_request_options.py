"""Which time limit a request runs under: the endpoint's own, the server's default, or
an offline replay's `time_limit` over both (`endpoints/executor.py`)."""

from __future__ import annotations

from pathlib import Path

from redpoll.endpoints.compiler import compile_endpoint
from redpoll.endpoints.executor import RequestOptions, prepare
from redpoll.endpoints.loader import parse_header
from redpoll.endpoints.model import Catalog, Endpoint


def _endpoint(source: str) -> Endpoint:
    meta, body, _ = parse_header(source)
    catalog = Catalog.from_tables({"events"})
    return compile_endpoint("e", body, path=Path("e.sql"), meta=meta, catalog=catalog)


CAPPED = "-- max_execution_time: 2\n%\nSELECT 1 FROM events"
UNCAPPED = "SELECT 1 FROM events"


def test_the_endpoints_own_limit_beats_the_default() -> None:
    query = prepare(_endpoint(CAPPED), {}, RequestOptions(default_timeout=10.0))
    assert query.timeout == 2.0 and "max_execution_time = 2" in query.sql
    query = prepare(_endpoint(UNCAPPED), {}, RequestOptions(default_timeout=10.0))
    assert query.timeout == 10.0 and "max_execution_time = 10" in query.sql
    # a serving client carries the default itself: not repeated in the SQL
    served = prepare(_endpoint(UNCAPPED), {}, RequestOptions(session_caps=True))
    assert "max_execution_time" not in served.sql


def test_an_offline_time_limit_replaces_every_endpoints_own() -> None:
    offline = RequestOptions(time_limit=60.0, session_caps=True)
    for source in (CAPPED, UNCAPPED):
        query = prepare(_endpoint(source), {}, offline)
        assert query.timeout == 60.0 and "max_execution_time = 60" in query.sql
        assert "max_execution_time = 2," not in query.sql
