"""The classic Redis co-occurrence recommender a team would build: the baseline of
bench/bench_serving.py, behind the same HTTP stack as Redpoll (Litestar + uvicorn).

    .venv/bin/python bench/redis_recommender.py --port 8001 --redis-port 6379

Ingest (`POST /events`, NDJSON events as for Redpoll's `POST /v0/events`) runs one Lua
script per request, so a request is applied atomically and concurrent requests cannot
count a pair twice:
  * dedup: an event whose `event_id` is already in the SET `seen` changes nothing;
  * also_bought: per order a SET `order:<id>` of its purchased items; a new item x of an
    order of at most `max_basket_items` items adds 1 to (x, y) and (y, x) for every
    other item y (ZINCRBY `also:<x>` / `also:<y>`); the purchase that takes an order past
    the cap takes its pairs back out. That is `basket_pairs` (materialized_views/
    basket_pairs.sql); ZSET `popular` counts the orders of any size with an item (its
    `('', x)` rows) and fills short lists;
  * trending: a ZSET per hour bucket `trend:<hour>` of event-type-weighted counts
    (endpoints/trending.sql's default weights), expiring 90 days after its hour;
  * for_user-style history: a ZSET `user:<id>` of type-weighted counts and a SET
    `bought:<id>` of purchased items.
Serving reads with ZREVRANGE (also_bought), ZUNIONSTORE of the hour buckets with decay
weights (trending) and of the also_bought sets of the user's ten heaviest items
(for_user: co-purchase neighbours, purchased items left out, trending fills). Answers are
item ids and scores only (no catalog), which spares Redis the catalog join Redpoll does.
The Lua script touches keys it does not declare: fine on one node, not on a cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import msgspec
import redis
import redis.asyncio as aioredis
from litestar import Litestar, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException

__all__ = (
    "MAX_BASKET_ITEMS",
    "RedisUnavailable",
    "create_app",
    "event_args",
    "load_script",
    "redis_server",
)

MAX_BASKET_ITEMS = 50
#: endpoints/trending.sql's default weights per event type
TREND_WEIGHTS = {"purchase": 5.0, "cart": 3.0, "click": 2.0, "view": 1.0, "return": -5.0}
#: endpoints/for_user.sql's default weights of a user's items
USER_WEIGHTS = {"purchase": 1.0, "cart": 0.7, "click": 0.5, "view": 0.3}
TREND_KEEP_HOURS = 90 * 24
HOUR_MS = 3_600_000

INGEST_LUA = """
local cap = tonumber(ARGV[1])
local oldest_hour = tonumber(ARGV[2])
local trend_w = cjson.decode(ARGV[3])
local user_w = cjson.decode(ARGV[4])
local stored = 0
for i = 5, #ARGV, 6 do
  local eid, user, item, etype, order, hour =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5])
  if redis.call('SADD', 'seen', eid) == 1 then
    stored = stored + 1
    local w = trend_w[etype]
    if w and hour >= oldest_hour then
      local key = 'trend:' .. hour
      redis.call('ZINCRBY', key, w, item)
      redis.call('EXPIREAT', key, hour * 3600 + 90 * 86400)
    end
    if user ~= '' then
      local uw = user_w[etype]
      if uw then redis.call('ZINCRBY', 'user:' .. user, uw, item) end
      if etype == 'purchase' then redis.call('SADD', 'bought:' .. user, item) end
    end
    if etype == 'purchase' and order ~= '' and redis.call('SADD', 'order:' .. order, item) == 1 then
      redis.call('ZINCRBY', 'popular', 1, item)
      local n = redis.call('SCARD', 'order:' .. order)
      if n <= cap then
        for _, other in ipairs(redis.call('SMEMBERS', 'order:' .. order)) do
          if other ~= item then
            redis.call('ZINCRBY', 'also:' .. item, 1, other)
            redis.call('ZINCRBY', 'also:' .. other, 1, item)
          end
        end
      elseif n == cap + 1 then
        local members = redis.call('SMEMBERS', 'order:' .. order)
        for _, a in ipairs(members) do
          if a ~= item then
            for _, b in ipairs(members) do
              if b ~= item and b ~= a then redis.call('ZINCRBY', 'also:' .. a, -1, b) end
            end
            redis.call('ZREMRANGEBYSCORE', 'also:' .. a, '-inf', 0)
          end
        end
      end
    end
  end
end
return stored
"""


class RedisUnavailable(RuntimeError):
    """No `redis-server` binary, or it did not start."""


class Event(msgspec.Struct):
    """The fields of a Redpoll event this recommender uses (others are ignored)."""

    event_id: str = ""
    ts: float | None = None
    user_id: str = ""
    item_id: str = ""
    event_type: str = ""
    order_id: str = ""


_decode_events = msgspec.json.Decoder(list[Event]).decode


def event_args(
    events: Sequence[Mapping[str, Any]] | Sequence[Event],
    now_ms: float,
    max_basket_items: int = MAX_BASKET_ITEMS,
) -> list[str]:
    """The ARGV of one run of the ingest script for `events` (a missing `ts` is now,
    a missing `event_id` a fresh one, as Redpoll does)."""
    args = [
        str(max_basket_items),
        str(int(now_ms // HOUR_MS) - TREND_KEEP_HOURS),
        msgspec.json.encode(TREND_WEIGHTS).decode(),
        msgspec.json.encode(USER_WEIGHTS).decode(),
    ]
    for e in events:
        row = e if isinstance(e, Mapping) else msgspec.structs.asdict(e)
        ts = row.get("ts") or now_ms
        ms = ts if ts > 1e11 else ts * 1000  # epoch ms or s, as Redpoll reads numbers
        args += (
            row.get("event_id") or uuid.uuid4().hex,
            row.get("user_id") or "",
            row.get("item_id") or "",
            row.get("event_type") or "",
            row.get("order_id") or "",
            str(int(ms // HOUR_MS)),
        )
    return args


def load_script(client: redis.Redis) -> Any:
    """The ingest script registered on a synchronous client (preloads, tests)."""
    return client.register_script(INGEST_LUA)


def _scored(pairs: Sequence[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"item_id": m, "score": round(s, 6)} for m, s in pairs]


async def also_bought(r: aioredis.Redis, item: str, limit: int) -> list[tuple[str, float]]:
    """Most co-ordered items; the most ordered items fill a short list (score 1e-9 x
    orders, as endpoints/also_bought.sql)."""
    async with r.pipeline(transaction=False) as p:
        p.zrevrange(f"also:{item}", 0, limit - 1, withscores=True)
        p.zrevrange("popular", 0, 2 * limit, withscores=True)
        co, popular = await p.execute()
    rows = [(m, s) for m, s in co if s > 0]
    if len(rows) < limit:
        seen = {m for m, _ in rows} | {item}
        rows += [(m, 1e-9 * s) for m, s in popular if m not in seen][: limit - len(rows)]
    return rows


async def trending(
    r: aioredis.Redis, hours: int, limit: int, half_life_hours: float = 24.0, now: float = 0.0
) -> list[tuple[str, float]]:
    """Hour buckets after now - hours, each weighted 2^(-age / half-life), summed."""
    now = now or time.time()
    last = int(now // 3600)
    weights = {
        f"trend:{h}": math.exp2(-max(now - h * 3600, 0) / (3600 * half_life_hours))
        for h in range(last - hours + 1, last + 1)
    }
    tmp = f"tmp:{uuid.uuid4().hex}"
    async with r.pipeline(transaction=True) as p:
        p.zunionstore(tmp, weights)
        p.zrevrangebyscore(tmp, "+inf", "(0", start=0, num=limit, withscores=True)
        p.delete(tmp)
        _, rows, _ = await p.execute()
    return list(rows)


async def for_user(r: aioredis.Redis, user: str, limit: int) -> list[tuple[str, float]]:
    """Co-purchase neighbours of the user's ten heaviest items, weighted by them, the
    items the user bought left out; trending (72 h) fills (cold start: trending)."""
    async with r.pipeline(transaction=False) as p:
        p.zrevrange(f"user:{user}", 0, 9, withscores=True)
        p.smembers(f"bought:{user}")
        seeds, bought = await p.execute()
    rows: list[tuple[str, float]] = []
    if seeds:
        tmp = f"tmp:{uuid.uuid4().hex}"
        async with r.pipeline(transaction=True) as p:
            p.zunionstore(tmp, {f"also:{m}": w for m, w in seeds})
            if bought:
                p.zrem(tmp, *bought)
            p.zrevrange(tmp, 0, limit - 1, withscores=True)
            p.delete(tmp)
            rows = (await p.execute())[-2]
    if len(rows) < limit:
        seen = {m for m, _ in rows} | bought
        fill = await trending(r, 72, limit + len(rows) + min(len(bought), 500))
        rows += [(m, 1e-9 * s) for m, s in fill if m not in seen][: limit - len(rows)]
    return rows


@dataclass
class _Config:
    redis_port: int
    max_basket_items: int


def _int(request: Request[Any, Any, Any], name: str, default: int, top: int) -> int:
    raw = request.query_params.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        raise HTTPException(status_code=400, detail=f"{name} must be an integer") from None
    if not 1 <= value <= top:
        raise HTTPException(status_code=400, detail=f"{name} must be in 1..{top}")
    return value


def _required(request: Request[Any, Any, Any], name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise HTTPException(status_code=400, detail=f"{name} is required")
    return str(value)


def _answer(rows: list[tuple[str, float]]) -> dict[str, Any]:
    return {"data": _scored(rows), "rows": len(rows)}


@get(["/health", "/v0/health"], sync_to_thread=False)
def health() -> dict[str, str]:
    """Readiness (also at Redpoll's path, so `redpoll.testing.wait_until_responds` works)."""
    return {"status": "ok"}


@post("/events", status_code=202)
async def ingest(request: Request[Any, Any, Any], state: State) -> dict[str, int]:
    """NDJSON events, applied by the ingest script in chunks of 1,000 (atomic each)."""
    body = await request.body()
    lines = [line for line in body.split(b"\n") if line.strip()]
    try:
        events = _decode_events(b"[" + b",".join(lines) + b"]")
    except msgspec.DecodeError as exc:
        raise HTTPException(status_code=400, detail=f"bad NDJSON: {exc}") from None
    now_ms = time.time() * 1000
    stored = 0
    for start in range(0, len(events), 1000):
        args = event_args(events[start : start + 1000], now_ms, state.config.max_basket_items)
        stored += int(await state.script(keys=[], args=args))
    return {"successful_rows": len(events), "stored_rows": stored, "quarantined_rows": 0}


@get("/also_bought")
async def also_bought_route(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    item = _required(request, "item_id")
    return _answer(await also_bought(state.redis, item, _int(request, "limit", 10, 100)))


@get("/trending")
async def trending_route(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    hours = _int(request, "hours", 72, TREND_KEEP_HOURS)
    return _answer(await trending(state.redis, hours, _int(request, "limit", 10, 100)))


@get("/for_user")
async def for_user_route(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    user = _required(request, "user_id")
    return _answer(await for_user(state.redis, user, _int(request, "limit", 10, 100)))


def create_app(redis_port: int, max_basket_items: int = MAX_BASKET_ITEMS) -> Litestar:
    """The recommender app; its Redis client is opened at startup, closed at shutdown."""

    async def startup(app: Litestar) -> None:
        client = aioredis.Redis(host="127.0.0.1", port=redis_port, decode_responses=True)
        app.state.redis = client
        app.state.script = client.register_script(INGEST_LUA)

    async def shutdown(app: Litestar) -> None:
        await app.state.redis.aclose()

    return Litestar(
        route_handlers=[health, ingest, also_bought_route, trending_route, for_user_route],
        on_startup=[startup],
        on_shutdown=[shutdown],
        state=State({"config": _Config(redis_port, max_basket_items)}),
        openapi_config=None,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server(workdir: Path, timeout: float = 10) -> Iterator[tuple[Popen[bytes], int]]:
    """Start Debian's `redis-server` on a free 127.0.0.1 port, without persistence (the
    most favourable setting for Redis); yield (process, port); always stop it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable(
            "redis-server not found: install it with `apt-get install redis-server`"
        )
    port = _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / f"redis-{port}.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RedisUnavailable(f"redis-server exited at start (code {process.returncode})")
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RedisUnavailable(f"redis-server did not answer in {timeout}s") from None
                time.sleep(0.05)
        client.close()
        yield process, port
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        log.close()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--max-basket-items", type=int, default=MAX_BASKET_ITEMS)
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(args.redis_port, args.max_basket_items),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        http="httptools",
        timeout_keep_alive=5,
    )


if __name__ == "__main__":
    main()
