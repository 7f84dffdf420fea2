"""Latency of a parameterized point-lookup endpoint: HTTP vs the same query in-process.

    .venv/bin/python bench/bench_endpoint_latency.py [--rows 200000] [--requests 2000]

Phase 1 starts `redpoll serve` (a subprocess, as in production) on a temporary project
whose migration creates and fills `products`, and times `GET /v0/pipes/lookup.json?id=N`
with a keep-alive client. Phase 2 (after the server stopped, since a chDB directory has
one owner) opens the same store in this process and times (a) the bare parameterized
query through clickhouse-connect and (b) render + the same query (templating overhead).
The difference HTTP - direct at p50 is the overhead we aim to keep under 1 ms.
"""

from __future__ import annotations

import argparse
import http.client as http_client
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from redpoll.testing import run_server

ENDPOINT = """-- description: one product by id
SELECT id, name, price FROM products WHERE id = {{ UInt64(id, required=True) }}
"""
MIGRATION = """CREATE TABLE IF NOT EXISTS {{{{ database }}}}.products
(id UInt64, name String, price Float64) ENGINE = MergeTree ORDER BY id;
INSERT INTO {{{{ database }}}}.products
SELECT number, concat('product-', toString(number)), number / 100 FROM numbers({rows});
"""
DIRECT_SQL = "SELECT id, name, price FROM products WHERE id = {id:UInt64}"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 * 1000, p99 * 1000


def time_calls(fn, ids: list[int]) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for i in ids:
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(7)
    ids = [rng.randrange(args.rows) for _ in range(args.requests)]
    warm = ids[:200]

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "bench"
        for folder in ("endpoints", "migrations", "sql", "materialized_views"):
            (project / folder).mkdir(parents=True)
        (project / "endpoints" / "lookup.sql").write_text(ENDPOINT)
        (project / "migrations" / "0001_products.sql").write_text(MIGRATION.format(rows=args.rows))
        env = {"REDPOLL_ADMIN_TOKEN": "bench", "REDPOLL_LOG_LEVEL": "warning"}
        auth = {"Authorization": "Bearer bench"}

        # Phase 1: over HTTP, against a real `redpoll serve`.
        with run_server(project, env=env) as server, httpx.Client(base_url=server.url) as http:
            http.post("/redpoll/v1/admin/migrations/up", json={}, headers=auth).raise_for_status()
            http.post("/redpoll/v1/admin/reload", headers=auth).raise_for_status()

            def over_http(i: int) -> None:
                r = http.get("/v0/pipes/lookup.json", params={"id": i})
                assert r.status_code == 200, r.text

            time_calls(over_http, warm)
            http_times = time_calls(over_http, ids)

            # The same requests from a lighter client (stdlib http.client, keep-alive), so
            # less of the measured time is the Python client's own work.
            port = int(server.url.rsplit(":", 1)[1])
            conn = http_client.HTTPConnection("127.0.0.1", port)

            def over_raw_http(i: int) -> None:
                conn.request("GET", f"/v0/pipes/lookup.json?id={i}")
                response = conn.getresponse()
                response.read()
                assert response.status == 200

            time_calls(over_raw_http, warm)
            raw_http_times = time_calls(over_raw_http, ids)
            conn.close()

        # Phase 2: in-process, same store, same query.
        from redpoll.clickhouse.client import connect, parse_url
        from redpoll.endpoints.executor import execute, prepare
        from redpoll.endpoints.loader import catalog_from_client, load_endpoint

        target = parse_url(f"chdb://{project / '.redpoll' / 'data'}", "default")
        admin = connect(target)
        reader = connect(target, readonly=True)
        endpoint = load_endpoint(project / "endpoints" / "lookup.sql", catalog_from_client(admin))
        assert not hasattr(endpoint, "message"), endpoint

        def direct(i: int) -> None:
            reader.raw_query(
                DIRECT_SQL + " SETTINGS output_format_json_quote_64bit_integers = 1",
                parameters={"id": i},
                fmt="JSON",
            )

        def templated(i: int) -> None:
            execute(reader, prepare(endpoint, {"id": str(i)}))  # type: ignore[arg-type]

        def render_only(i: int) -> None:
            prepare(endpoint, {"id": str(i)})  # type: ignore[arg-type]

        time_calls(direct, warm)
        direct_times = time_calls(direct, ids)
        templated_times = time_calls(templated, ids)
        render_times = time_calls(render_only, ids)
        reader.close()
        admin.close()

    rows = [
        ("in-process query (clickhouse-connect)", direct_times),
        ("in-process render + query", templated_times),
        ("render only", render_times),
        ("HTTP GET /v0/pipes/lookup.json (httpx)", http_times),
        ("HTTP GET /v0/pipes/lookup.json (http.client)", raw_http_times),
    ]
    print(f"point lookup on {args.rows} rows, {args.requests} requests, sequential")
    print(f"{'':40} {'p50 ms':>8} {'p99 ms':>8}")
    for label, samples in rows:
        p50, p99 = percentiles(samples)
        print(f"{label:40} {p50:8.3f} {p99:8.3f}")
    d50, d99 = percentiles(direct_times)
    for label, samples in (("httpx", http_times), ("http.client", raw_http_times)):
        h50, h99 = percentiles(samples)
        print(
            f"HTTP ({label}) / direct ratio: p50 {h50 / d50:.2f}x, p99 {h99 / d99:.2f}x; "
            f"overhead p50 {h50 - d50:+.3f} ms (target < 1 ms), p99 {h99 - d99:+.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
