"""`redpoll demo`: migrate, load the bundled Online Retail sample (if the store is empty),
print ready-to-paste curl calls for every recommendation endpoint, then serve.

The sample (`data/sample/`, CC BY 4.0, see its README) is a slice of UCI Online Retail.
Its timestamps are shifted so that the last event happens "now": trending, popular and
the 90-day TTL of `trending` then behave as on a live shop. Loading goes through the
normal ingestion service (validation, EventWriter, materialized views).
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import click

from redpoll.cli._backend import open_backend
from redpoll.cli._context import load, project_option
from redpoll.settings import Settings

__all__ = ("build_sample", "demo")

SAMPLE_DIR = Path("data") / "sample"
EVENTS_FILE = "online_retail_events.ndjson.gz"
ITEMS_FILE = "online_retail_items.ndjson.gz"


def build_sample(dataset: Path, out_dir: Path, days: float) -> tuple[int, int]:
    """Write the last `days` of an Online Retail file as NDJSON events and items."""
    from redpoll.datasets.online_retail import read_events, read_items

    events = read_events(dataset)
    last = events[-1]["ts"]
    keep = [e for e in events if e["ts"] > last - days * 86_400_000]
    used = {e["item_id"] for e in keep}
    items = [i for i in read_items(dataset) if i["item_id"] in used]
    out_dir.mkdir(parents=True, exist_ok=True)
    with gzip.open(out_dir / EVENTS_FILE, "wt", encoding="utf-8", compresslevel=9) as f:
        for e in keep:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
    with gzip.open(out_dir / ITEMS_FILE, "wt", encoding="utf-8", compresslevel=9) as f:
        for i in items:
            f.write(json.dumps(i, separators=(",", ":")) + "\n")
    return len(keep), len(items)


def _shifted(path: Path, now_ms: int, key: str) -> tuple[bytes, dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    shift = now_ms - max(r[key] for r in rows) if key == "ts" else 0
    for r in rows:
        if key in r:
            r[key] = (r[key] + shift) / 1000 if key == "ts" else r[key] / 1000
    body = ("\n".join(json.dumps(r) for r in rows) + "\n").encode()
    return body, {"rows": rows, "shift_ms": shift}


def load_sample(settings: Any, sample_dir: Path) -> dict[str, Any]:
    """Load the sample into an empty store; returns what the curl examples need."""
    from redpoll.ingest.service import IngestService
    from redpoll.store import Store

    now_ms = int(time.time() * 1000)
    with Store.open(settings, "redpoll demo") as store:
        store.migrations().up()
        db = store.target.database
        loaded = int(store.admin.query(f"SELECT count() FROM {db}.events").result_rows[0][0])
        events_body, info = _shifted(sample_dir / EVENTS_FILE, now_ms, "ts")
        if loaded == 0:
            items_body, _ = _shifted(sample_dir / ITEMS_FILE, now_ms, "updated_at")
            service = IngestService.for_store(store, settings)
            try:
                click.echo("loading the bundled Online Retail sample ...", err=True)
                started = time.perf_counter()
                items = service.ingest("items", items_body)
                # events in chunks, in time order, as a live shop would send them
                lines = events_body.splitlines(keepends=True)
                ok = 0
                for i in range(0, len(lines), 20_000):
                    ok += service.ingest("events", b"".join(lines[i : i + 20_000])).successful_rows
                click.echo(
                    f"loaded {items.successful_rows} items and {ok} events "
                    f"in {time.perf_counter() - started:.1f} s "
                    f"(timestamps shifted by {info['shift_ms'] / 86_400_000:.0f} days)",
                    err=True,
                )
            finally:
                service.close()
        else:
            click.echo(f"store already has {loaded} events: not loading the sample", err=True)
        user = store.admin.command(
            f"SELECT user_id FROM {db}.user_history GROUP BY user_id "
            "ORDER BY uniqExact(item_id) DESC, user_id LIMIT 1"
        )
        item = store.admin.command(
            f"SELECT item_id FROM {db}.buyer_pairs WHERE item_id != '' GROUP BY item_id "
            "ORDER BY sum(buyers) DESC, item_id LIMIT 1"
        )
        category = store.admin.command(
            f"SELECT category FROM {db}.items FINAL WHERE available GROUP BY category "
            "ORDER BY count() DESC, category LIMIT 1"
        )
    return {
        "user": str(user or "17850"),
        "item": str(item or "85123A"),
        "category": str(category or "HOLDER"),
    }


#: the token `redpoll demo` creates (or rotates) for its curl examples
DEMO_TOKEN = "demo"
DEMO_SCOPES = ["PIPES:READ", "DATASOURCES:APPEND:events"]


def demo_token(settings: Settings) -> str:
    """A fresh value of the `demo` token (read every endpoint, append events): created on
    the first run, rotated on later ones, since only its hash is stored."""
    with open_backend(settings, "redpoll demo") as backend:
        if any(t["name"] == DEMO_TOKEN for t in backend.token_list()):
            value: str = backend.token_refresh(DEMO_TOKEN)["token"]
        else:
            value = backend.token_create(DEMO_TOKEN, DEMO_SCOPES, None)["token"]
    return value


def curl_examples(base: str, ex: dict[str, str], token: str = "") -> str:
    u, i, c = ex["user"], ex["item"], ex["category"]
    p = f"{base}/v0/pipes"
    curl = 'curl -H "Authorization: Bearer $TOKEN"' if token else "curl"
    lines = [
        f"export TOKEN={token}   # the 'demo' token: PIPES:READ, DATASOURCES:APPEND:events"
        if token
        else "# auth is off: no token needed",
        "# Recommendation endpoints (endpoints/*.sql); add &variant=b for the B version",
        f"{curl} '{p}/for_user.json?user_id={u}&limit=5'",
        f"{curl} '{p}/for_user.json?user_id=someone-new&limit=5'          # cold start",
        f"{curl} '{p}/for_user.json?user_id={u}&exclude_purchased=false&max_per_category=2'",
        f"{curl} '{p}/also_bought.json?item_id={i}&limit=5'",
        f"{curl} '{p}/trending.json?hours=48&half_life_hours=12&limit=5'",
        f"{curl} '{p}/trending.json?category={c}&limit=5'",
        f"{curl} '{p}/popular.json?days=7&limit=5&exclude={i}'",
        f"{curl} '{p}/recently_viewed.json?user_id={u}&event_types=purchase&limit=5'",
        "# feedback: impressions and clicks carry the rec_id and source of a response",
        f"{curl} -X POST '{base}/v0/events?name=events' -d "
        f'\'{{"event_type":"click","user_id":"{u}","item_id":"{i}",'
        f'"rec_id":"<rec_id>","source":"for_user:a"}}\'',
        f"{curl} '{p}/recommendation_stats.json'",
        f"{curl} '{p}'                                   # every endpoint and its parameters",
    ]
    return "\n".join(lines)


@click.command()
@project_option
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@click.option(
    "--sample",
    "sample_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Sample directory (default: <project>/data/sample).",
)
@click.option(
    "--build-from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Maintainers: rebuild the sample from an Online Retail CSV and exit.",
)
@click.option(
    "--days",
    type=float,
    default=4.0,
    show_default=True,
    help="With --build-from: days of data in the sample.",
)
@click.option("--no-serve", is_flag=True, help="Load and print the examples, do not serve.")
@click.pass_context
def demo(
    ctx: click.Context,
    project_dir: str | None,
    host: str | None,
    port: int | None,
    sample_dir: Path | None,
    build_from: Path | None,
    days: float,
    no_serve: bool,
) -> None:
    """Load the bundled Online Retail sample, print curl examples, then serve."""
    settings = load(project_dir, host=host, port=port)
    sample_dir = sample_dir or settings.project_dir / SAMPLE_DIR
    if build_from is not None:
        n_events, n_items = build_sample(build_from, sample_dir, days)
        click.echo(f"wrote {n_events} events and {n_items} items to {sample_dir}")
        return
    examples = load_sample(settings, sample_dir)
    base = f"http://{settings.host}:{settings.port}"
    token = demo_token(settings) if settings.auth else ""
    click.echo("\n" + curl_examples(base, examples, token) + "\n")
    if no_serve:
        return
    from redpoll.cli.commands.core import serve

    ctx.invoke(serve, project_dir=project_dir, host=host, port=port, dev=None)
