"""Ordinary readers under abuse: latency, correctness and memory (acceptance).

    .venv/bin/python bench/bench_abuse.py [--quiet-s 10] [--abuse-s 20] [--json]

Builds a temporary project with this repo's endpoints, loads the bundled Online Retail
sample (`redpoll demo --no-serve`, data/sample, CC BY 4.0), starts a real `redpoll serve`
on 127.0.0.1 and runs two phases:

1. quiet: 16 reader threads call the shipped endpoints (also_bought, for_user, trending,
   popular, recently_viewed) back to back;
2. abuse: the same 16 readers plus 4 abusers sending failing and heavy `q=` (throwIf,
   a multi-GB groupArray, sleepEachRow, 200 nested parentheses, a 1 MB `q`).

Every ordinary call passes `now` and `rec_id`, so its answer is deterministic: each 200
must be JSON with exactly the keys meta, data, rows, statistics (and maybe
rows_before_limit_at_least) and the same `data` as the quiet server answered before the
phases. Reported: corrupted answers, ordinary p50/p99 per phase and their ratio (target
<= 3x), status codes per abuse kind (target: 4xx only, never 5xx), the server's peak
RSS (VmRSS from /proc). tests/e2e/test_abuse.py runs the same harness, shorter.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from redpoll.testing import AdminSQL, RunningServer, run_cli, run_server

REPO = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "abuse-bench-admin"
#: readers and abusers alike call with a PIPES:READ token, as apps on the internet do
READ_TOKEN = "abuse-bench-read"
READ_HEADERS = {"Authorization": f"Bearer {READ_TOKEN}"}
SERVER_ENV = {
    "REDPOLL_ADMIN_TOKEN": ADMIN_TOKEN,
    "REDPOLL_READ_TOKEN": READ_TOKEN,
    "REDPOLL_LOG_LEVEL": "warning",
}
REQUIRED_KEYS = {"meta", "data", "rows", "statistics"}
OPTIONAL_KEYS = {"rows_before_limit_at_least"}
ABUSED_PIPE = "/v0/pipes/trending.json"
CLIENT_TIMEOUT_S = 30  # a caller waiting longer than this counts as stalled

# (kind, q): sent by GET, except "1MB q" (POST, JSON body: a URL that long is refused
# as a too large request head before the query path sees it).
ABUSE: list[tuple[str, str]] = [
    ("throwIf", "SELECT throwIf(1, 'x') FROM _"),
    (
        "groupArray 3GB",
        "SELECT length(groupArray(randomString(1000))) FROM _ ARRAY JOIN range(3000000) AS x",
    ),
    ("sleepEachRow", "SELECT sum(sleepEachRow(0.5)) FROM _"),
    ("nested parens", "SELECT " + "(" * 200 + "1" + ")" * 200 + " FROM _"),
    ("1MB q", "SELECT item_id FROM _ WHERE " + " OR ".join(["score > 0"] * 90_000)),
]


@dataclasses.dataclass
class PhaseStats:
    """What one phase observed; lists are appended to by many threads (GIL-atomic)."""

    latencies: list[float] = dataclasses.field(default_factory=list)
    ordinary_status: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    corrupted: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    abuse_status: dict[str, collections.Counter[str]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    abuse_latencies: list[float] = dataclasses.field(default_factory=list)
    by_pipe: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(list)
    )

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "requests": len(ordered),
            "p50_ms": round(_pct(ordered, 0.50) * 1000, 1),
            "p99_ms": round(_pct(ordered, 0.99) * 1000, 1),
            "max_ms": round((ordered[-1] if ordered else 0) * 1000, 1),
            "ordinary_status": dict(self.ordinary_status),
            "p50_ms_by_pipe": {
                pipe: round(_pct(sorted(v), 0.5) * 1000, 1) for pipe, v in self.by_pipe.items()
            },
            "corrupted": len(self.corrupted),
            "abuse_status": {k: dict(v) for k, v in self.abuse_status.items()},
            "abuse_max_ms": round(max(self.abuse_latencies, default=0) * 1000, 1),
        }


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


# --- project and server -------------------------------------------------------------------
def prepare_project(root: Path) -> Path:
    """A project with the shipped endpoints and views, the bundled sample loaded."""
    project = root / "abuse"
    for folder in ("endpoints", "migrations", "sql", "materialized_views"):
        if (REPO / folder).is_dir():
            shutil.copytree(REPO / folder, project / folder)
    shutil.copytree(REPO / "data" / "sample", project / "data" / "sample")
    loaded = run_cli(project, "demo", "--no-serve", timeout=300)
    if loaded.returncode != 0:
        raise RuntimeError(f"redpoll demo --no-serve failed:\n{loaded.stderr}")
    return project


@contextmanager
def served(project: Path) -> Iterator[RunningServer]:
    with run_server(project, env=SERVER_ENV, ready_timeout=120) as server:
        yield server


def _admin_column(url: str, query: str) -> list[str]:
    return [str(next(iter(row.values()))) for row in AdminSQL(url, ADMIN_TOKEN).rows(query)]


def ordinary_calls(url: str) -> list[str]:
    """Calls of the shipped endpoints on ids that exist, each with a deterministic answer."""
    items = _admin_column(
        url,
        "SELECT item_id FROM basket_pairs WHERE item_id != '' GROUP BY item_id "
        "ORDER BY sum(orders) DESC, item_id LIMIT 8",
    )
    users = _admin_column(
        url,
        "SELECT user_id FROM user_item_stats GROUP BY user_id "
        "ORDER BY count() DESC, user_id LIMIT 8",
    )
    if not items or not users:
        raise RuntimeError("the sample did not load: no items or users")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    fixed = {"now": now, "rec_id": "abuse-bench"}
    calls: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        calls.append(("also_bought", {"item_id": item, "limit": 10, "rec_id": "abuse-bench"}))
    for user in users:
        calls.append(("for_user", {"user_id": user, "limit": 10, **fixed}))
        calls.append(("recently_viewed", {"user_id": user, "event_types": "purchase", **fixed}))
    calls.append(("trending", {"hours": 48, "limit": 10, **fixed}))
    calls.append(("trending", {"hours": 168, "half_life_hours": 12, "limit": 20, **fixed}))
    calls.append(("popular", {"days": 7, "limit": 10, **fixed}))
    calls.append(("popular", {"days": 30, "limit": 20, "exclude": items[0], **fixed}))
    return [f"/v0/pipes/{name}.json?{httpx.QueryParams(params)}" for name, params in calls]


def reference_answers(url: str, calls: list[str]) -> dict[str, Any]:
    """`data` of each call on the quiet server (called twice: it must be deterministic)."""
    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=60, headers=READ_HEADERS) as http:
        for call in calls:
            first, second = http.get(call), http.get(call)
            if first.status_code != 200 or second.status_code != 200:
                raise RuntimeError(f"{call}: {first.status_code} {first.text[:300]}")
            if first.json()["data"] != second.json()["data"]:
                raise RuntimeError(f"{call}: two quiet answers differ")
            out[call] = first.json()["data"]
    return out


def check_answer(body: bytes, expected: Any) -> str | None:
    """Why a 200 body is not a correct answer, or None."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        return f"not JSON: {exc}"
    if not isinstance(doc, dict):
        return "not a JSON object"
    keys = set(doc)
    if not keys >= REQUIRED_KEYS or keys - REQUIRED_KEYS - OPTIONAL_KEYS:
        return f"keys {sorted(keys)}"
    if doc["data"] != expected:
        return "data differs from the quiet answer"
    if doc["rows"] != len(doc["data"]):
        return f"rows {doc['rows']} != {len(doc['data'])} data rows"
    return None


# --- load -------------------------------------------------------------------------------
class RssSampler(threading.Thread):
    """Samples VmRSS of `pid` from /proc (no psutil) until stopped."""

    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[int] = []
        self.stop = threading.Event()

    def read(self) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        line = next(x for x in text.splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append(self.read())
            except (OSError, StopIteration):
                return
            self.stop.wait(self.every_s)


def _reader(
    url: str,
    calls: list[str],
    ref: dict[str, Any],
    seed: int,
    stop: threading.Event,
    out: PhaseStats,
) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S, headers=READ_HEADERS) as http:
        while not stop.is_set():
            call = rng.choice(calls)
            started = time.perf_counter()
            try:
                r = http.get(call)
            except httpx.HTTPError as exc:  # no answer in time counts, at its full wait
                out.latencies.append(time.perf_counter() - started)
                out.ordinary_status[type(exc).__name__] += 1
                continue
            out.latencies.append(time.perf_counter() - started)
            out.by_pipe[call.split("?")[0].rsplit("/", 1)[1]].append(out.latencies[-1])
            out.ordinary_status[str(r.status_code)] += 1
            if r.status_code == 200:
                problem = check_answer(r.content, ref[call])
                if problem:
                    out.corrupted.append({"call": call, "problem": problem, "body": r.text[:300]})


def _abuser(url: str, seed: int, pause_s: float, stop: threading.Event, out: PhaseStats) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    i = seed
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S, headers=READ_HEADERS) as http:
        while not stop.is_set():
            kind, q = ABUSE[i % len(ABUSE)]
            i += 1
            started = time.perf_counter()
            try:
                if kind == "1MB q":
                    r = http.post(ABUSED_PIPE, json={"q": q, "now": now, "limit": 20})
                else:
                    r = http.get(ABUSED_PIPE, params={"q": q, "now": now, "limit": 20})
                out.abuse_status[kind][str(r.status_code)] += 1
            except httpx.HTTPError as exc:
                out.abuse_status[kind][type(exc).__name__] += 1
            out.abuse_latencies.append(time.perf_counter() - started)
            stop.wait(pause_s)


def run_phase(
    url: str,
    calls: list[str],
    ref: dict[str, Any],
    seconds: float,
    readers: int = 16,
    abusers: int = 0,
    abuser_pause_s: float = 0.1,
) -> PhaseStats:
    """`readers` ordinary threads (and `abusers`) for `seconds`; returns what they saw."""
    stats = PhaseStats()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_reader, args=(url, calls, ref, n, stop, stats), daemon=True)
        for n in range(readers)
    ] + [
        threading.Thread(target=_abuser, args=(url, n, abuser_pause_s, stop, stats), daemon=True)
        for n in range(abusers)
    ]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(90)
    return stats


def measure(
    server: RunningServer,
    quiet_s: float,
    abuse_s: float,
    readers: int = 16,
    abusers: int = 4,
    abuser_pause_s: float = 0.1,
) -> dict[str, Any]:
    """Both phases against a running server over the sample; a JSON-able report."""
    calls = ordinary_calls(server.url)
    ref = reference_answers(server.url, calls)
    rss = RssSampler(server.process.pid)
    rss_start = rss.read()
    rss.start()
    try:
        quiet = run_phase(server.url, calls, ref, quiet_s, readers)
        abuse = run_phase(server.url, calls, ref, abuse_s, readers, abusers, abuser_pause_s)
    finally:
        rss.stop.set()
        rss.join(5)
    q, a = quiet.summary(), abuse.summary()
    statuses = collections.Counter[str]()
    for counter in abuse.abuse_status.values():
        statuses.update(counter)
    return {
        "calls": len(calls),
        "quiet": q,
        "abuse": a,
        "p99_ratio": round(a["p99_ms"] / max(q["p99_ms"], 0.001), 2),
        "corrupted": quiet.corrupted + abuse.corrupted,
        "server_5xx": sum(
            n
            for counter in (quiet.ordinary_status, abuse.ordinary_status, statuses)
            for code, n in counter.items()
            if code.startswith("5")
        ),
        "abuse_non_4xx": {code: n for code, n in statuses.items() if not code.startswith("4")},
        "rss_start_mb": round(rss_start / 2**20),
        "rss_peak_mb": round(max([rss_start, *rss.samples]) / 2**20),
        "server_alive": server.process.poll() is None,
    }


def print_report(report: dict[str, Any]) -> None:
    q, a = report["quiet"], report["abuse"]
    print(f"ordinary calls: {report['calls']} distinct")
    for name, p in (("quiet", q), ("abuse", a)):
        print(
            f"{name:6} {p['requests']:6d} ordinary requests  p50 {p['p50_ms']:8.1f} ms  "
            f"p99 {p['p99_ms']:8.1f} ms  max {p['max_ms']:8.1f} ms  statuses {p['ordinary_status']}"
        )
        print(f"       p50 by endpoint (ms): {p['p50_ms_by_pipe']}")
    print(f"p99 with abusers / without: {report['p99_ratio']}x (target <= 3x)")
    print(f"corrupted ordinary answers: {len(report['corrupted'])} (target 0)")
    for bad in report["corrupted"][:5]:
        print(f"   {bad['problem']}: {bad['call']}\n      {bad['body'][:160]!r}")
    print(f"5xx answers (all callers): {report['server_5xx']} (target 0)")
    print("abuser statuses (target: 4xx only):")
    for kind, counter in a["abuse_status"].items():
        print(f"   {kind:15} {counter}")
    print(f"slowest abuser answer: {a['abuse_max_ms']:.0f} ms")
    print(f"server RSS: {report['rss_start_mb']} MB at start, peak {report['rss_peak_mb']} MB")
    print(f"server still running: {report['server_alive']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet-s", type=float, default=10)
    parser.add_argument("--abuse-s", type=float, default=20)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--abusers", type=int, default=4)
    parser.add_argument("--abuser-pause-s", type=float, default=0.1)
    parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        project = prepare_project(Path(tmp))
        with served(project) as server:
            report = measure(
                server, args.quiet_s, args.abuse_s, args.readers, args.abusers, args.abuser_pause_s
            )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    ok = (
        not report["corrupted"]
        and report["server_5xx"] == 0
        and not report["abuse_non_4xx"]
        and report["p99_ratio"] <= 3
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
