"""The console's HTML fragments: each page's content, rendered for the request's token.

Every route here is guarded like the API route it mirrors (console/pages.py:`page_guard`,
api/datasources.py:`datasources_guard`) and reads through the same services: endpoint
calls go through the query lanes (`endpoints/lanes.py`) exactly as `/v0/pipes` does,
data sources through `endpoints/datasource_catalog.py`, and the console's own reads
through console/queries.py on the admin client.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.params import FromPath, Parameter

from redpoll.api.auth import authenticate
from redpoll.api.datasources import datasources_guard
from redpoll.api.state import AppState, app_state
from redpoll.clickhouse.client import Client
from redpoll.console import queries
from redpoll.console.charts import polyline, wilson_interval
from redpoll.console.highlight import highlight_sql
from redpoll.console.pages import PAGES, html, page_guard, render, signed_in_guard
from redpoll.endpoints.datasource_catalog import (
    DataSourceInfo,
    datasource_names,
    read_datasources,
)
from redpoll.endpoints.executor import RequestOptions, prepare
from redpoll.errors import EndpointNotFound
from redpoll.tokens.scopes import DATASOURCES_APPEND, DATASOURCES_READ, PIPES_READ

__all__ = ("ConsoleFragments", "eval_dir")

T = TypeVar("T")
AnyRequest = Request[Any, Any, Any]
QUARANTINE_PAGE_ROWS = 20
#: where `redpoll evaluate --out` is pointed in this repository, then its default
EVAL_DIRS = ("docs/eval", "eval-results")
SPARK_W, SPARK_H = 120, 24
CHART_W, CHART_H = 600, 160


def eval_dir(project_dir: Path) -> Path | None:
    """The folder of the latest `redpoll evaluate` report, if there is one."""
    found = [project_dir / d for d in EVAL_DIRS if (project_dir / d / "results.json").is_file()]
    return max(found, key=lambda d: (d / "results.json").stat().st_mtime, default=None)


async def _admin_read(wiring: AppState, read: Callable[[Client, str], T]) -> T:
    """`read(client, database)` on the admin client, in a worker thread."""
    store = wiring.store

    def run() -> T:
        with store.admin_lock:
            return read(store.admin, store.target.database)

    return await anyio.to_thread.run_sync(run)


async def _call_endpoint(wiring: AppState, name: str, params: dict[str, Any]) -> list[Any]:
    """An endpoint's rows, called as `/v0/pipes/<name>.json` calls it."""
    endpoint = wiring.endpoints.snapshot.get(name)
    options = RequestOptions.serving(wiring.settings, quote_64bit=False)

    def build() -> Any:
        return prepare(endpoint, params, options)

    timeout = options.timeout(endpoint)
    body = await wiring.query_lanes.lane(heavy=False).run(build, timeout)
    data: list[Any] = msgspec.json.decode(body)["data"]
    return data


def _ab_rows(totals: dict[tuple[str, str], list[int]]) -> list[dict[str, Any]]:
    rows = []
    for (endpoint, variant), (impressions, clicks, purchases) in sorted(totals.items()):
        low, high = wilson_interval(clicks, impressions)
        rows.append(
            {
                "endpoint": endpoint,
                "variant": variant or "-",
                "impressions": impressions,
                "clicks": clicks,
                "purchases": purchases,
                "ctr": clicks / impressions if impressions else 0.0,
                "low": low,
                "high": high,
            }
        )
    return rows


def _verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Per endpoint with several variants: which one leads, and whether the 95% Wilson
    intervals separate them (otherwise: no clear winner yet)."""
    by_endpoint: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_endpoint.setdefault(row["endpoint"], []).append(row)
    out = []
    for endpoint, variants in by_endpoint.items():
        if len(variants) < 2:
            continue
        ranked = sorted(variants, key=lambda r: r["ctr"], reverse=True)
        best, second = ranked[0], ranked[1]
        if best["low"] > second["high"]:
            out.append(
                f"{endpoint}: variant {best['variant']} leads {second['variant']} "
                f"({best['ctr']:.1%} vs {second['ctr']:.1%}; 95% intervals do not overlap)"
            )
        else:
            out.append(
                f"{endpoint}: no clear winner yet ({best['variant']} {best['ctr']:.1%} vs "
                f"{second['variant']} {second['ctr']:.1%}; 95% intervals overlap)"
            )
    return out


class ConsoleFragments(Controller):
    path = "/ui/f"
    include_in_schema = False

    @get("/nav", guards=[signed_in_guard])
    async def nav(self, request: AnyRequest) -> Response[str]:
        principal = authenticate(request)
        served = app_state(request.app.state).endpoints.snapshot.endpoints
        visible = [
            page
            for page in PAGES
            if page.allows(principal) and (page.endpoint is None or page.endpoint in served)
        ]
        return html(render("fragments/nav.html", pages=visible, principal=principal))

    @get("/endpoints", guards=[page_guard("endpoints")])
    async def endpoints(self, request: AnyRequest, state: State) -> Response[str]:
        principal = authenticate(request)
        snap = app_state(state).endpoints.snapshot
        names = principal.resources(PIPES_READ, sorted(snap.endpoints))
        shown = [
            {
                **snap.endpoints[name].describe(),
                # the SQL is the operator's business logic: ADMIN only (docs/console.md)
                "sql": highlight_sql(snap.endpoints[name].source) if principal.is_admin else None,
            }
            for name in names
        ]
        return html(render("fragments/endpoints.html", endpoints=shown))

    @get("/data", guards=[page_guard("data")])
    async def data(self, request: AnyRequest, state: State) -> Response[str]:
        principal = authenticate(request)
        wiring = app_state(state)

        def read(client: Client, database: str) -> list[tuple[DataSourceInfo, Any]]:
            catalog = read_datasources(client, wiring.settings.project_dir, database)
            return [
                (info, queries.freshness(client, database, info))
                for name, info in catalog.items()
                if principal.grant(DATASOURCES_READ, name)
                or principal.grant(DATASOURCES_APPEND, name)
            ]

        shown = await _admin_read(wiring, read)
        return html(render("fragments/data.html", datasources=shown))

    @get("/quarantine/{name:str}", guards=[datasources_guard])
    async def quarantine(
        self,
        state: State,
        name: FromPath[str],
        page: Annotated[int, Parameter(ge=0, le=100_000)] = 0,
    ) -> Response[str]:
        wiring = app_state(state)
        if datasource_names(wiring.settings.project_dir).owner.get(name, "") is not None:
            raise EndpointNotFound(f"Data Source '{name[:128]}' not found")
        found = await _admin_read(
            wiring,
            lambda c, db: queries.quarantine_page(c, db, name, page, QUARANTINE_PAGE_ROWS),
        )
        pages = -(-found.total // QUARANTINE_PAGE_ROWS) if found else 0
        return html(
            render("fragments/quarantine.html", name=name, found=found, page=page, pages=pages)
        )

    @get("/trending", guards=[page_guard("trending")])
    async def trending(
        self,
        state: State,
        hours: Annotated[int, Parameter(ge=1, le=2160)] = 72,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 10,
    ) -> Response[str]:
        wiring = app_state(state)
        # the demo's data may be old: evaluate as of the newest hour that has events
        until = await _admin_read(wiring, queries.latest_trending_hour)
        until = until or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        at = until.replace(minute=59, second=59)
        rows = await _call_endpoint(
            wiring, "trending", {"hours": hours, "limit": limit, "now": at.isoformat(" ")}
        )
        span = min(hours, 168)
        series = await _admin_read(
            wiring,
            lambda c, db: queries.item_series(c, db, [r["item_id"] for r in rows], at, span),
        )
        for row in rows:
            values = series.get(row["item_id"], [])
            row["spark"] = polyline(values, SPARK_W, SPARK_H)
            row["events"] = sum(values)
        return html(
            render(
                "fragments/trending.html",
                rows=rows,
                hours=hours,
                limit=limit,
                at=at,
                span=span,
                w=SPARK_W,
                h=SPARK_H,
            )
        )

    @get("/recommendations", guards=[page_guard("recommendations")])
    async def recommendations(
        self, state: State, days: Annotated[int, Parameter(ge=1, le=3650)] = 30
    ) -> Response[str]:
        rows = await _call_endpoint(
            app_state(state), "recommendation_stats", {"days": days, "limit": 10_000}
        )
        totals: dict[tuple[str, str], list[int]] = {}
        daily: dict[str, dict[str, float]] = {}
        for row in rows:
            key = (row["endpoint"], row["variant"])
            total = totals.setdefault(key, [0, 0, 0])
            total[0] += int(row["impressions"])
            total[1] += int(row["clicks"])
            total[2] += int(row["purchases"])
            daily.setdefault(f"{key[0]}:{key[1]}", {})[str(row["day"])] = float(row["ctr"])
        days_seen = sorted({str(row["day"]) for row in rows})
        lines = [
            {
                "source": source,
                "points": polyline([by_day.get(d, 0.0) for d in days_seen], CHART_W, CHART_H),
            }
            for source, by_day in sorted(daily.items())
        ]
        ab = _ab_rows(totals)
        return html(
            render(
                "fragments/recommendations.html",
                ab=ab,
                verdicts=_verdicts(ab),
                lines=lines,
                days=days,
                days_seen=days_seen,
                w=CHART_W,
                h=CHART_H,
            )
        )

    @get("/evaluation", guards=[page_guard("evaluation")])
    async def evaluation(self, state: State) -> Response[str]:
        folder = eval_dir(app_state(state).settings.project_dir)
        report = json.loads((folder / "results.json").read_text()) if folder else None
        tasks: dict[str, list[dict[str, Any]]] = {}
        for row in (report or {}).get("table", []):
            tasks.setdefault(row["task"], []).append(row)
        for rows in tasks.values():
            best = max(row["ndcg"] for row in rows)
            for row in rows:
                row["best"] = row["ndcg"] == best
        written = (
            dt.datetime.fromtimestamp((folder / "results.json").stat().st_mtime, dt.UTC)
            if folder
            else None
        )
        return html(
            render(
                "fragments/evaluation.html",
                report=report,
                tasks=tasks,
                folder=folder,
                written=written,
                chart=bool(folder and (folder / "metrics.png").is_file()),
            )
        )

    @get("/evaluation/chart.png", guards=[page_guard("evaluation")], sync_to_thread=True)
    def evaluation_chart(self, state: State) -> Response[bytes]:
        """The report's chart, fetched by console.js with the token (an `<img src>` could
        not send it); 204 when there is no report."""
        folder = eval_dir(app_state(state).settings.project_dir)
        chart = folder / "metrics.png" if folder else None
        if chart is None or not chart.is_file():
            return Response(b"", status_code=204)
        return Response(chart.read_bytes(), media_type="image/png")

    @get("/requests", guards=[page_guard("requests")])
    async def requests(
        self, state: State, minutes: Annotated[int, Parameter(ge=1, le=1440)] = 60
    ) -> Response[str]:
        wiring = app_state(state)
        summary = await _admin_read(wiring, lambda c, db: queries.request_summary(c, db, minutes))
        series = await _admin_read(wiring, lambda c, db: queries.request_series(c, db, minutes))
        for row in summary:
            line = series.get(row["pipe_name"], {"p90_ms": [], "errors": []})
            row["p90_spark"] = polyline(line["p90_ms"], SPARK_W, SPARK_H)
            row["error_spark"] = polyline(line["errors"], SPARK_W, SPARK_H, top=1)
        return html(
            render("fragments/requests.html", rows=summary, minutes=minutes, w=SPARK_W, h=SPARK_H)
        )
