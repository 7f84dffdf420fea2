"""What recording every endpoint call in `pipe_stats` costs a request (api/request_log.py).

    .venv/bin/python bench/bench_pipe_stats.py [--requests 3000] [--rows 100000]

One process, one embedded store in a temporary project (a `products` table, the
pipe_stats migration of migrations/, a point-lookup endpoint). Two apps over that store,
built with `create_app(..., record_calls=True)` and `record_calls=False`, are called in
alternating blocks through Litestar's test client (the same client overhead for both), so
machine noise hits both alike. Prints p50/p99 of each and the p50 difference: the
recording's cost on the request path (goal: < 0.2 ms), the writer thread's competition for
the GIL included. At the end it checks that every recorded call reached `pipe_stats`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from litestar.testing import TestClient

from redpoll.app import create_app
from redpoll.settings import load_settings
from redpoll.store import Store

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-admin-token"
ENDPOINT = """-- description: one product by id
%
SELECT id, name, price FROM products WHERE id = {{ UInt64(id, required=True) }}
"""
MIGRATION = """CREATE TABLE IF NOT EXISTS {{{{ database }}}}.products
(id UInt64, name String, price Float64) ENGINE = MergeTree ORDER BY id;
INSERT INTO {{{{ database }}}}.products
SELECT number, concat('product-', toString(number)), number / 100 FROM numbers({rows});
"""


def p50_p99(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99)] * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000, help="per mode")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--block", type=int, default=100, help="requests per alternation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        for folder in ("sql", "endpoints", "migrations"):
            (project / folder).mkdir(parents=True)
        (project / "migrations" / "0001_products.sql").write_text(MIGRATION.format(rows=args.rows))
        stats_migration = next((REPO / "migrations").glob("*_pipe_stats.sql"))
        shutil.copy(stats_migration, project / "migrations" / stats_migration.name)
        (project / "endpoints" / "lookup.sql").write_text(ENDPOINT)
        settings = load_settings(
            {"project_dir": str(project), "admin_token": TOKEN, "rate_limit_rps": 0},
            environ={},
        )
        store = Store.open(settings, "bench", read_clients=settings.read_pool_size)
        try:
            with store.admin_lock:
                store.migrations().up()
            headers = {"Authorization": f"Bearer {TOKEN}"}
            on_app = create_app(settings, store=store, record_calls=True)
            off_app = create_app(settings, store=store, record_calls=False)
            samples: dict[str, list[float]] = {"on": [], "off": []}
            with TestClient(on_app) as on, TestClient(off_app) as off:
                clients = {"on": on, "off": off}
                for client in clients.values():  # warm up: pools, compiled templates
                    for i in range(200):
                        warm = client.get(f"/v0/pipes/lookup.json?id={i}", headers=headers)
                        assert warm.is_success, warm.text
                n = 0
                while n < args.requests:
                    for mode, client in clients.items():
                        for i in range(n, n + args.block):
                            url = f"/v0/pipes/lookup.json?id={i % args.rows}"
                            t0 = time.perf_counter()
                            response = client.get(url, headers=headers)
                            samples[mode].append(time.perf_counter() - t0)
                            assert response.status_code == 200, response.text
                    n += args.block
                time.sleep(1.5)  # the writer's last flush
                recorded = store.admin.query("SELECT count() FROM pipe_stats").result_rows[0][0]
                dropped = on_app.state["redpoll"].call_log.stats.dropped
        finally:
            store.close()
    on_p50, on_p99 = p50_p99(samples["on"])
    off_p50, off_p99 = p50_p99(samples["off"])
    print(f"requests per mode: {len(samples['on'])} (blocks of {args.block}, alternating)")
    print(f"recording off: p50 {off_p50:.3f} ms  p99 {off_p99:.3f} ms")
    print(f"recording on:  p50 {on_p50:.3f} ms  p99 {on_p99:.3f} ms")
    print(f"added by recording at p50: {on_p50 - off_p50:+.3f} ms (goal < 0.2 ms)")
    print(f"pipe_stats rows: {recorded} (expected {len(samples['on']) + 200}), dropped {dropped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
