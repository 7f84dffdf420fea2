"""Serving side by side, one workload: Redpoll with its result cache on and off, the
classic Redis co-occurrence recommender, and plain ClickHouse over raw `events`.

    .venv/bin/python bench/bench_serving.py --out docs/bench/serving [--quick]

Systems, each a server on 127.0.0.1 behind Litestar + uvicorn, started and stopped here:
  on     `redpoll serve`, this repository's views and endpoints, result cache on
  off    the same, result cache off (the `*cache*` settings of app/redpoll/settings.py;
         when there are none, this build has no cache: `on` is reported unavailable)
  redis  Debian's `redis-server` (no persistence) + bench/redis_recommender.py
  raw    `redpoll serve` on a project with only `events` and `items` (no view), serving
         bench/raw_endpoints/*.sql: the same answers computed from the raw events
Data: Online Retail (../shared/data/online-retail, CC BY 4.0). The first `--preload`
share (time order, shifted to end now) is loaded before any server starts (Redpoll and
raw: `redpoll load`; Redis: its ingest script, no HTTP). The rest is replayed through each
system's own POST endpoint while it is measured, stamped with the send time, at `--rate`
events/s in requests of `--batch` (then again with fresh ids), so answers change and
caches are invalidated as in production.

Per system: for also_bought, trending and for_user, `--requests` GETs per concurrency
level (1, 8, 32 keep-alive clients; a level stops after `--level-seconds`), with item and
user ids drawn with probability proportional to their event count in the data; the
cache hit ratio (Redpoll's /v0/metrics, when it exposes cache counters); freshness:
acknowledged purchase of two never-bought items -> the second one in also_bought of the
first (`--probes` probes); the maximum ingest rate (`--ingest-clients` x
`--ingest-batch`-event requests for `--ingest-seconds`, nothing else running); peak RSS
of the server processes. Writes `serving.md` (the table), `serving.png` and
`serving.json` to `--out` and prints the table. Heavy: run it alone,
`flock /tmp/redpoll-heavy.lock .venv/bin/python bench/bench_serving.py --out ...`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
from bench_ingest_path import Http, make_project, peak_rss
from http_replay import DATA, ENV, REPO, pct, recent_events
from serving_load import (
    ENDPOINTS,
    Api,
    PacedIngest,
    Replay,
    cache_counts,
    freshness,
    max_ingest,
    run_level,
    skewed_params,
)
from serving_report import write_report

from redpoll.datasets.online_retail import read_items
from redpoll.settings import ACK_MODES, SETTINGS, setting_default
from redpoll.testing import RunningServer, copy_project, free_port, run_cli, run_server

BENCH = Path(__file__).resolve().parent
SYSTEMS = ("on", "off", "redis", "raw")


def cache_env(on: bool) -> dict[str, str] | None:
    """REDPOLL_* variables turning the result cache on or off, from the declared settings
    whose name has `cache` (booleans; byte budgets: 0 = off). None: no cache setting."""
    env: dict[str, str] = {}
    for s in SETTINGS:
        if "cache" not in s.name:
            continue
        if s.type is bool:
            env[s.env_var] = "true" if on else "false"
        elif s.type is int and any(w in s.name for w in ("bytes", "size", "entries")):
            if not on:
                env[s.env_var] = "0"
            elif not s.default:
                env[s.env_var] = str(256 * 2**20)
    return env or None


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores (nproc), {model}"


def write_ndjson(path: Path, rows: list[dict[str, Any]]) -> Path:
    encode = msgspec.json.Encoder().encode
    with open(path, "wb") as out:
        for row in rows:
            out.write(encode(row) + b"\n")
    return path


def load_project(project: Path, items: Path, events: Path) -> None:
    """`redpoll load` the catalog, then the events (the CLI opens the store itself)."""
    for source, path in (("items", items), ("events", events)):
        done = run_cli(project, "load", source, str(path), "--chunk-rows", "50000", timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"redpoll load {source} failed:\n{done.stdout}{done.stderr}")


def prepare(
    root: Path, prefix: list[dict[str, Any]], items: list[dict[str, Any]], systems: set[str]
) -> dict[str, Path]:
    """Projects for the Redpoll systems, loaded with the catalog and the preload (the two
    projects load in parallel); `off` gets a copy of `on`'s store."""
    items_file = write_ndjson(root / "items.ndjson", items)
    events_file = write_ndjson(root / "preload.ndjson", prefix)
    projects: dict[str, Path] = {}
    if systems & {"on", "off"}:
        projects["on"] = make_project(root, views=True)
        copy_project(REPO, projects["on"], ("endpoints",), exist_ok=True)
    if "raw" in systems:
        projects["raw"] = make_project(root, views=False)
        shutil.copytree(BENCH / "raw_endpoints", projects["raw"] / "endpoints")
    failures: list[BaseException] = []

    def load(project: Path) -> None:
        try:
            started = time.monotonic()
            load_project(project, items_file, events_file)
            print(f"  {project.name}: loaded in {time.monotonic() - started:.0f} s", flush=True)
        except BaseException as exc:  # reported in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=load, args=(p,)) for p in projects.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    if "off" in systems:
        projects["off"] = root / "off"
        shutil.copytree(projects["on"], projects["off"], symlinks=True)
    return projects


def preload(
    stack: contextlib.ExitStack,
    root: Path,
    prefix: list[dict[str, Any]],
    items: list[dict[str, Any]],
    systems: set[str],
) -> tuple[dict[str, Path], list[RunningServer]]:
    """Load every system at once: the Redpoll projects (`prepare`) and, meanwhile,
    Redis (its servers stay up until `stack` closes)."""
    redis_out: list[Any] = []

    def start_redis() -> None:
        try:
            redis_out.append(stack.enter_context(redis_system(root, prefix)))
        except BaseException as exc:  # re-raised in the main thread
            redis_out.append(exc)

    thread = threading.Thread(target=start_redis)
    if "redis" in systems:
        thread.start()
    try:
        projects = prepare(root, prefix, items, systems)
    finally:
        if thread.is_alive():
            thread.join()
    if redis_out and isinstance(redis_out[0], BaseException):
        raise redis_out[0]
    return projects, (redis_out[0] if redis_out else [])


@contextlib.contextmanager
def redis_system(root: Path, prefix: list[dict[str, Any]]) -> Iterator[list[RunningServer]]:
    """redis-server preloaded with `prefix` through the recommender's ingest script, and
    the recommender app (uvicorn) in front of it."""
    import redis
    from redis_recommender import event_args, load_script, redis_server

    with redis_server(root / "redis") as (process, port):
        client = redis.Redis(host="127.0.0.1", port=port)
        script = load_script(client)
        now_ms = time.time() * 1000
        started = time.monotonic()
        for start in range(0, len(prefix), 2000):
            script(keys=[], args=event_args(prefix[start : start + 2000], now_ms))
        client.close()
        print(f"  redis: loaded in {time.monotonic() - started:.0f} s", flush=True)
        app_port = free_port()
        log_path = root / f"redis-app-{app_port}.log"
        with open(log_path, "wb") as log:
            app = subprocess.Popen(
                [sys.executable, str(BENCH / "redis_recommender.py"), "--port", str(app_port),
                 "--redis-port", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        front = RunningServer(app, f"http://127.0.0.1:{app_port}", log_path)
        back = RunningServer(process, f"redis://127.0.0.1:{port}", root / "redis")
        try:
            from redpoll.testing import wait_until_responds

            wait_until_responds(front, 30)
            yield [front, back]
        finally:
            front.stop()


def metrics_text(api: Api) -> str:
    http = Http(api.url)
    try:
        status, body = http.request("GET", "/v0/metrics")
    finally:
        http.close()
    return body.decode() if status == 200 else ""


class Budget:
    """Shrinks the time cap of the remaining levels so that the run ends in time."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def cap(self, wanted: float, levels_left: int, reserve: float) -> float:
        left = self.end - time.monotonic() - reserve
        return max(0.5, min(wanted, left / max(levels_left, 1)))


def measure(
    key: str,
    api: Api,
    servers: list[RunningServer],
    replay: Replay,
    workload: dict[str, dict[int, list[dict[str, Any]]]],
    probes: list[tuple[str, str]],
    args: argparse.Namespace,
    budget: Budget,
    systems_after: int,
) -> dict[str, Any]:
    """Every measurement of one running system (see the module docstring)."""
    result: dict[str, Any] = {"levels": [], "hits": {}}
    for endpoint in ENDPOINTS:  # warm-up, not measured
        paths = [api.path(endpoint, p) for p in workload[endpoint][1][: args.warmup]]
        run_level(api, endpoint, paths, 1, 5)
    fixed = args.ingest_seconds + 0.5 * args.probes + 16  # per system, besides the levels
    levels_left = levels_per_system = len(ENDPOINTS) * len(args.concurrency)
    with PacedIngest(api, replay, args.rate, args.batch) as steady:
        for endpoint in ENDPOINTS:
            before = metrics_text(api) if api.style == "redpoll" else ""
            for conc in args.concurrency:
                later = (fixed + args.level_seconds * levels_per_system) * systems_after
                cap = budget.cap(args.level_seconds, levels_left, fixed + later)
                levels_left -= 1
                paths = [api.path(endpoint, p) for p in workload[endpoint][conc]]
                level = run_level(api, endpoint, paths, conc, cap)
                result["levels"].append(level)
                print(
                    f"  {key:5} {endpoint:11} c={conc:<2} n={len(level.latencies):5} "
                    f"p50 {pct(level.latencies, 0.5) * 1e3:7.2f} ms "
                    f"p99 {pct(level.latencies, 0.99) * 1e3:7.2f} ms "
                    f"{level.throughput:8.0f}/s errors {level.errors} {level.first_error[:80]}",
                    flush=True,
                )
            if api.style == "redpoll":
                result["hits"][endpoint] = hit_ratio(before, metrics_text(api), endpoint)
        fresh, fresh_errors = freshness(api, probes, max_seconds=4 + 0.5 * len(probes))
    result["steady"] = steady.stats
    result["fresh"], result["fresh_errors"] = fresh, fresh_errors
    print(
        f"  {key:5} freshness p50 {pct(fresh, 0.5) * 1e3:.1f} ms p99 {pct(fresh, 0.99) * 1e3:.1f}"
        f" ms ({len(fresh)} probes, {len(fresh_errors)} errors); steady ingest "
        f"{steady.stats.rate:,.0f} events/s, {steady.stats.dropped_ticks} ticks dropped",
        flush=True,
    )
    result["ingest"] = max_ingest(
        api, replay, args.ingest_seconds, args.ingest_batch, args.ingest_clients
    )
    print(f"  {key:5} max ingest {result['ingest'].rate:,.0f} events/s", flush=True)
    result["rss"] = sum(peak_rss(s) for s in servers)
    return result


def hit_ratio(before: str, after: str, endpoint: str) -> float | None:
    start, end = cache_counts(before, endpoint), cache_counts(after, endpoint)
    if end is None:
        return None
    hits = end[0] - (start[0] if start else 0)
    misses = end[1] - (start[1] if start else 0)
    return hits / (hits + misses) if hits + misses else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--out", type=Path, default=REPO / "docs" / "bench" / "serving")
    add("--csv", type=Path, default=DATA)
    add("--limit", type=int, default=None, help="only the first N lines of the data set")
    add("--preload", type=float, default=0.8, help="share of the data loaded before measuring")
    add("--rate", type=float, default=2000, help="steady ingest while measuring, events/s")
    add("--batch", type=int, default=20, help="events per steady ingest request")
    add("--requests", type=int, default=2000, help="requests per endpoint and concurrency")
    add("--level-seconds", type=float, default=6.0, help="time cap of one level")
    add("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    add("--warmup", type=int, default=20, help="unmeasured requests per endpoint")
    add("--probes", type=int, default=20, help="freshness probes per system")
    add("--ingest-seconds", type=float, default=5.0)
    add("--ingest-batch", type=int, default=500)
    add("--ingest-clients", type=int, default=4)
    add("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + str(SYSTEMS))
    add("--budget", type=float, default=540, help="seconds the whole run may take")
    add(
        "--ack",
        choices=ACK_MODES,
        default=setting_default("ack"),
        help="Redpoll's `ack` setting (durable: 202 once in the write-ahead log, ADR 0022)",
    )
    add("--ack-gather-s", type=float, default=None, help="Redpoll's `ack_gather_s` (durable)")
    add("--seed", type=int, default=18)
    add("--quick", action="store_true", help="smoke test: 30k events, few requests")
    args = parser.parse_args(argv)
    if args.quick:
        args.limit = args.limit or 30_000
        args.requests, args.level_seconds, args.probes = 60, 1.0, 3
        args.ingest_seconds, args.warmup, args.budget = 1.0, 5, 240
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    systems = set(filter(None, args.systems.split(",")))
    if unknown := systems - set(SYSTEMS):
        print(f"unknown systems: {sorted(unknown)}", file=sys.stderr)
        return 2
    if not args.csv.is_file():
        print(f"data set not found: {args.csv}", file=sys.stderr)
        return 2
    if "redis" in systems:
        problem = redis_problem()
        if problem:
            print(f"cannot run the Redis baseline: {problem}", file=sys.stderr)
            return 2
    cache_on, cache_off = cache_env(True), cache_env(False) or {}
    notes = []
    if "on" in systems and cache_on is None:
        systems.discard("on")
        notes.append("Redpoll cache on: unavailable (no `*cache*` setting in this build)")
    budget = Budget(args.budget)
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _raise_exit)  # unwinds every server's `finally`

    events = recent_events(args.csv, args.limit)
    cut = int(len(events) * args.preload)
    shift = int(time.time() * 1000) - events[cut - 1]["ts"]  # the preload ends now
    prefix = [dict(e, ts=e["ts"] + shift) for e in events[:cut]]
    probes = [(f"BENCH-PROBE-{k:03d}-A", f"BENCH-PROBE-{k:03d}-B") for k in range(args.probes)]
    items = read_items(args.csv, args.limit)
    now_ms = int(time.time() * 1000)
    for item in items:
        item["updated_at"] += shift
    items += [
        {"item_id": i, "title": "BENCH PROBE", "category": "PROBE", "price": 1.0,
         "available": True, "updated_at": now_ms}
        for pair in probes for i in pair
    ]  # fmt: skip
    draw = skewed_params(events, args.seed)
    workload = {
        e: {c: [draw(e) for _ in range(args.requests)] for c in args.concurrency} for e in ENDPOINTS
    }
    print(
        f"{len(events):,} events: {cut:,} preloaded, {len(events) - cut:,} replayed at "
        f"{args.rate:,.0f} events/s; systems {sorted(systems)}; read in "
        f"{time.monotonic() - started:.0f} s",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    order = [s for s in SYSTEMS if s in systems]
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="redpoll-serving-")))
        try:
            projects, redis_servers = preload(stack, root, prefix, items, systems)
        except RuntimeError as exc:
            if type(exc).__name__ != "RedisUnavailable":  # (bench/redis_recommender.py)
                raise
            print(f"cannot run the Redis baseline: {exc}", file=sys.stderr)
            return 2
        print(f"preloaded in {time.monotonic() - started:.0f} s since start", flush=True)
        for n, key in enumerate(order):
            replay = Replay(events[cut:])
            after = len(order) - n - 1
            if key == "redis":
                api = Api(redis_servers[0].url, "redis")
                results[key] = measure(
                    key, api, redis_servers, replay, workload, probes, args, budget, after
                )
                continue
            env = {**ENV, "REDPOLL_LOG_LEVEL": "warning", "REDPOLL_ACK": args.ack}
            if args.ack_gather_s is not None:
                env["REDPOLL_ACK_GATHER_S"] = str(args.ack_gather_s)
            env.update((cache_on or {}) if key == "on" else cache_off)  # raw: no cache either
            with run_server(projects[key], env=env, ready_timeout=120) as server:
                api = Api(server.url, "redpoll")
                results[key] = measure(
                    key, api, [server], replay, workload, probes, args, budget, after
                )
    info = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "events": len(events),
        "preloaded": cut,
        "args": {k: str(v) for k, v in vars(args).items()},
        "cache_env": {"on": cache_on, "off": cache_off},
        "notes": notes,
        "seconds": time.monotonic() - started,
    }
    table = write_report(args.out, results, info)
    print(table)
    print(f"wrote {args.out}/serving.md, serving.png, serving.json in {info['seconds']:.0f} s")
    return 0


def redis_problem() -> str:
    """Why the Redis baseline cannot run here, or ''."""
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the `redis` package is missing: pip install -e '.[bench]'"
    if shutil.which("redis-server") is None:
        return "redis-server not found: apt-get install redis-server"
    return ""


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    raise SystemExit(main())
