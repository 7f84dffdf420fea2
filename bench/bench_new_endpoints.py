"""Latency of the recommendation endpoints of issue 20 over HTTP on the demo data: one
keep-alive client, result cache off, against the target p99 <= 20 ms.

    flock /tmp/redpoll-heavy.lock .venv/bin/python bench/bench_new_endpoints.py [--requests 500]

1. Creates a temporary project (the repository's sql/, migrations/, endpoints/,
   materialized_views/) and loads the bundled demo sample (`redpoll demo --no-serve`:
   data/sample/, 7 days of Online Retail shifted to end now). The sample has no
   sessions, so it adds `--sessions` anonymous sessions built from its last orders (one
   view per item of the order, a cart for its first item, spread over the last 10
   minutes; `session_id` = `s<order>`), loaded with `redpoll load`.
2. Runs `redpoll train` (the item vectors `similar_items` ranks by).
3. In a child process (chDB opens a data directory in one process at a time), picks the
   request pools from the store (users, items, items with and without a vector,
   sessions) and prints, per endpoint case, the in-process p50 of the whole query and of
   its `EXPLAIN PLAN` (parse, analysis, planning: the cost before any row is read), as
   bench/bench_recommendations.py does.
4. Starts `redpoll serve` (`redpoll.testing.run_server`) with `REDPOLL_CACHE=off` and,
   per endpoint case, sends `--requests` GETs with random parameters from one keep-alive
   client on 127.0.0.1; prints p50/p99/max, the engine's own time for the same requests
   (`statistics.elapsed` of each JSON answer) and the HTTP floor (`/v0/health`, same
   client, before and after), then met / not met against 20 ms.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from redpoll.testing import copy_project, run_server

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
TARGET_MS = 20.0
TOKEN = "bench"

Params = dict[str, Any]
Pools = dict[str, list[Any]]


def _pick(rng: random.Random, pool: list[Any], k: int) -> list[Any]:
    return rng.sample(pool, min(k, len(pool)))


#: endpoint case -> (endpoint, parameters of one random request)
CASES: dict[str, tuple[str, Callable[[Pools, random.Random], Params]]] = {
    "for_user mixed": (
        "for_user",
        lambda p, r: {"user_id": _user(p, r), "mode": "mixed", "limit": 10},
    ),
    "for_user repeat": (
        "for_user",
        lambda p, r: {"user_id": _user(p, r), "mode": "repeat", "limit": 10},
    ),
    "for_user explore": (
        "for_user",
        lambda p, r: {"user_id": _user(p, r), "mode": "explore", "limit": 10},
    ),
    "for_session session_id": (
        "for_session",
        lambda p, r: {"session_id": r.choice(p["sessions"]), "limit": 10},
    ),
    "for_session items": (
        "for_session",
        lambda p, r: {"items": ",".join(_pick(r, p["items"], r.randint(1, 3))), "limit": 10},
    ),
    "new_items": ("new_items", lambda p, r: {"limit": 10}),
    "new_items items": (
        "new_items",
        lambda p, r: {"items": ",".join(_pick(r, p["items"], r.randint(1, 2))), "limit": 10},
    ),
    "new_items session_id": (
        "new_items",
        lambda p, r: {"session_id": r.choice(p["sessions"]), "limit": 10},
    ),
    "similar_items": ("similar_items", lambda p, r: {"item_id": _item(p, r), "limit": 10}),
    "also_bought": (
        "also_bought",
        lambda p, r: {"item_id": r.choice(p["items"]), "limit": 10},
    ),
}


def _user(pools: Pools, rng: random.Random) -> str:
    """A known customer, or (1 in 10) an unknown one: the cold-start path."""
    return str(rng.choice(pools["users"])) if rng.random() < 0.9 else f"new-{rng.random()}"


def _item(pools: Pools, rng: random.Random) -> str:
    """An item with a vector, or (1 in 10) one without: the fallback path."""
    return str(rng.choice(pools["vectors"] if rng.random() < 0.9 else pools["no_vector"]))


def write_sessions(path: Path, n: int) -> int:
    """`n` sessions from the sample's last orders, as NDJSON events ending now."""
    with gzip.open(SAMPLE / "online_retail_events.ndjson.gz", "rt", encoding="utf-8") as f:
        events = [json.loads(line) for line in f if line.strip()]
    orders: dict[str, list[str]] = {}
    for e in events:
        if e["event_type"] == "purchase" and e["order_id"]:
            items = orders.setdefault(e["order_id"], [])
            if e["item_id"] not in items and len(items) < 20:
                items.append(e["item_id"])
    chosen = [o for o in list(orders)[-4 * n :] if len(orders[o]) >= 2][-n:]
    now = time.time()
    rows = 0
    with open(path, "w", encoding="utf-8") as out:
        for k, order in enumerate(chosen):
            start = now - 600 + 600 * k / max(len(chosen), 1)
            for j, item in enumerate(orders[order]):
                for event_type in ("view", "cart") if j == 0 else ("view",):
                    row = {
                        "event_id": f"s{order}:{j}:{event_type}",
                        "ts": start + j,
                        "session_id": f"s{order}",
                        "item_id": item,
                        "event_type": event_type,
                    }
                    out.write(json.dumps(row) + "\n")
                    rows += 1
    return rows


def inspect(project: Path, n: int) -> Pools:
    """Child process: the request pools, and the in-process cost of each case."""
    from redpoll.clickhouse.client import connect, parse_url

    target = parse_url(f"chdb://{project / '.redpoll' / 'data'}", "")
    client = connect(target)
    db = target.database

    def column(sql: str) -> list[Any]:
        return [r[0] for r in client.query(sql.format(db=db)).result_rows]

    pools: Pools = {
        "users": column(
            "SELECT user_id FROM {db}.user_history WHERE user_id != '' "
            "GROUP BY user_id ORDER BY user_id"
        ),
        "items": column(
            "SELECT other_item_id FROM {db}.basket_pairs WHERE item_id = '' "
            "GROUP BY other_item_id ORDER BY sum(orders) DESC, other_item_id LIMIT 1000"
        ),
        "sessions": column("SELECT DISTINCT session_id FROM {db}.session_history ORDER BY 1"),
        "vectors": column(
            "SELECT item_id FROM {db}.item_vectors WHERE model_version = "
            "(SELECT max(model_version) FROM {db}.item_vector_models) ORDER BY item_id"
        ),
    }
    pools["no_vector"] = column(
        "SELECT item_id FROM {db}.items FINAL WHERE item_id NOT IN "
        "(SELECT item_id FROM {db}.item_vectors) ORDER BY item_id"
    ) or ["no-such-item"]
    sizes = client.query(
        f"SELECT (SELECT count() FROM {db}.events), (SELECT count() FROM {db}.items FINAL), "
        f"(SELECT count() FROM {db}.trending), (SELECT count() FROM {db}.basket_pairs)"
    ).result_rows[0]
    print(
        f"store: events {sizes[0]:,}, items {sizes[1]:,}, trending rows {sizes[2]:,}, "
        f"basket_pairs rows {sizes[3]:,}; pools: "
        + ", ".join(f"{k} {len(v)}" for k, v in pools.items())
    )
    for line in planning_share(client, project, pools, n):
        print(line, flush=True)
    client.close()
    return pools


def planning_share(client: Any, project: Path, pools: Pools, n: int) -> list[str]:
    """In-process p50 per case, whole query vs its `EXPLAIN PLAN` (no table read)."""
    from redpoll.endpoints.executor import prepare
    from redpoll.endpoints.loader import catalog_from_client, load_endpoint
    from redpoll.endpoints.model import LoadError

    catalog = catalog_from_client(client)
    rng = random.Random(11)

    def p50(queries: list[tuple[str, dict[str, Any]]]) -> float:
        times = []
        for sql, parameters in queries:
            started = time.perf_counter()
            client.raw_query(sql, parameters=parameters or None, fmt="TSV")
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000

    lines = [f"in-process p50: {'SELECT 1':24s} {p50([('SELECT 1', {})] * n):5.2f} ms"]
    for case, (name, make) in CASES.items():
        endpoint = load_endpoint(project / "endpoints" / f"{name}.sql", catalog)
        if isinstance(endpoint, LoadError):
            raise RuntimeError(f"{name}: {endpoint}")
        queries = []
        for _ in range(n):
            query = prepare(endpoint, {k: str(v) for k, v in make(pools, rng).items()})
            queries.append((query.sql, dict(query.parameters)))
        p50(queries[:10])  # warm-up
        whole = p50(queries)
        plan = p50([("EXPLAIN PLAN " + sql, parameters) for sql, parameters in queries])
        lines.append(
            f"in-process p50: {case:24s} {whole:5.1f} ms, of which parse + analysis + "
            f"planning (EXPLAIN PLAN) {plan:4.1f} ms ({plan / whole:.0%})"
        )
    return lines


def timed(http: httpx.Client, path: str, params: list[Params]) -> tuple[list[float], list[float]]:
    """Wall seconds per GET, and the engine's `statistics.elapsed` where the answer has it."""
    wall, engine = [], []
    for p in params:
        started = time.perf_counter()
        r = http.get(path, params=p)
        wall.append(time.perf_counter() - started)
        if r.status_code != 200:
            raise RuntimeError(f"{path} {p}: {r.status_code} {r.text[:300]}")
        if path.startswith("/v0/pipes/"):
            engine.append(float(r.json().get("statistics", {}).get("elapsed", "nan")))
    return wall, engine


def quantiles(samples: list[float]) -> tuple[float, float, float]:
    """p50, p99 (nearest rank) and max, in ms."""
    s = sorted(samples)
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return statistics.median(s) * 1000, p99 * 1000, s[-1] * 1000


def cli(project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run `redpoll <args> --project <project>`; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "redpoll", *args, "--project", str(project)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return done.stdout


def prepare_project(project: Path, sessions: int) -> None:
    copy_project(REPO, project, ("sql", "migrations", "endpoints", "materialized_views"))
    started = time.perf_counter()
    cli(project, "demo", "--no-serve", "--sample", str(SAMPLE), env={"REDPOLL_AUTH": "off"})
    rows = write_sessions(project / "sessions.ndjson", sessions)
    cli(project, "load", "events", str(project / "sessions.ndjson"))
    print(
        f"loaded the demo sample + {sessions} sessions ({rows} events) in "
        f"{time.perf_counter() - started:.0f} s"
    )
    started = time.perf_counter()
    out = cli(project, "train").strip().splitlines()
    print(f"redpoll train: {out[-1] if out else ''} ({time.perf_counter() - started:.0f} s)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500, help="GETs per endpoint case")
    parser.add_argument("--sessions", type=int, default=300, help="synthetic sessions to add")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--in-process", type=int, default=30, help="queries per case, in-process")
    parser.add_argument(
        "--project",
        type=Path,
        help="load into this folder and keep it; if it holds a store already, serve that "
        "(with the repository's current endpoints/; its sessions leave for_session's "
        "30-minute window ~20 minutes after the load)",
    )
    parser.add_argument("--inspect", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inspect:  # child process: the store is opened here and closed before serving
        print(json.dumps(inspect(args.inspect, args.in_process)))
        return 0
    rng = random.Random(7)
    rows = []
    print(f"load average at the start (1/5/15 min): {os.getloadavg()}, cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        project = args.project or Path(tmp) / "bench"
        if (project / ".redpoll").exists():
            copy_project(REPO, project, ("endpoints",), exist_ok=True)
        else:
            prepare_project(project, args.sessions)
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--inspect",
                str(project),
                "--in-process",
                str(args.in_process),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        sys.stdout.write("\n".join(child.stdout.splitlines()[:-1]) + "\n")
        pools: Pools = json.loads(child.stdout.splitlines()[-1])
        env = {"REDPOLL_ADMIN_TOKEN": TOKEN, "REDPOLL_LOG_LEVEL": "warning", "REDPOLL_CACHE": "off"}
        with (
            run_server(project, env=env, ready_timeout=120) as server,
            httpx.Client(
                base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as http,
        ):
            health: list[Params] = [{}] * args.requests
            timed(http, "/v0/health", health[:50])  # warm-up
            floor = timed(http, "/v0/health", health)[0]
            for case in args.cases:
                name, make = CASES[case]
                params = [make(pools, rng) for _ in range(args.requests)]
                timed(http, f"/v0/pipes/{name}.json", params[:30])  # warm-up
                wall, engine = timed(http, f"/v0/pipes/{name}.json", params)
                rows.append((case, len(wall), *quantiles(wall), statistics.median(engine) * 1000))
                p50, p99, mx, eng = rows[-1][2:]
                print(
                    f"{case:24s} n={len(wall)} p50={p50:.1f} p99={p99:.1f} max={mx:.1f} ms, "
                    f"engine p50 {eng:.1f} ms ({'met' if p99 <= TARGET_MS else 'NOT MET'})",
                    flush=True,
                )
            floor += timed(http, "/v0/health", health)[0]
    f50, f99, fmax = quantiles(floor)
    print(f"\nload average at the end (1/5/15 min): {os.getloadavg()}, cores: {os.cpu_count()}")
    print(
        f"\nHTTP floor (/v0/health, same client, before and after): p50 {f50:.2f} ms, "
        f"p99 {f99:.2f} ms, max {fmax:.2f} ms"
    )
    print(
        "\n| endpoint (case) | requests | p50 ms | p99 ms | max ms | engine p50 ms | "
        f"p99 <= {TARGET_MS:.0f} ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for case, n, p50, p99, mx, eng in rows:
        verdict = "met" if p99 <= TARGET_MS else "**not met**"
        print(f"| {case} | {n} | {p50:.1f} | {p99:.1f} | {mx:.1f} | {eng:.1f} | {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
