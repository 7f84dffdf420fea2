"""`redpoll evaluate`: offline evaluation of the recommendation endpoints on a real data
set replayed through the ingestion path (app/redpoll/evaluation, docs/recommendations.md)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from redpoll.cli._context import load, project_option

__all__ = ("evaluate_command",)


def _params(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}")
        out[key] = value
    return out


def format_table(table: list[dict[str, Any]], k: int) -> str:
    """The results as a Markdown table, with the lift of the endpoint over the best baseline."""
    lines = [
        f"| task | method | queries | HitRate@{k} | MRR@{k} | NDCG@{k} |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in table:
        name = f"**{row['method']}**" if row["method"] == "endpoint" else row["method"]
        lines.append(
            f"| {row['task']} | {name} | {row['n']} | {row['hit']:.4f} | "
            f"{row['mrr']:.4f} | {row['ndcg']:.4f} |"
        )
    return "\n".join(lines)


def lifts(table: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for task in sorted({r["task"] for r in table}):
        rows = {r["method"]: r for r in table if r["task"] == task}
        if "endpoint" not in rows:
            continue
        baselines = {m: r for m, r in rows.items() if m != "endpoint"}
        best = max(baselines, key=lambda m: baselines[m]["hit"])
        pop = rows.get("popularity_all")
        out[task] = {
            "best_baseline": best,
            "lift_vs_best": rows["endpoint"]["hit"] / (baselines[best]["hit"] or 1) - 1,
            "ratio_vs_popularity_all": rows["endpoint"]["hit"] / (pop["hit"] or 1) if pop else None,
        }
    return out


@click.command("evaluate")
@project_option
@click.option(
    "--dataset",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The data set file (e.g. online_retail.csv.gz).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["online-retail"]),
    default="online-retail",
    show_default=True,
    help="How to read the data set.",
)
@click.option("--k", type=int, default=10, show_default=True, help="List length scored.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("eval-results"),
    show_default=True,
    help="Where results.json, results.md and metrics.png go.",
)
@click.option(
    "--window-hours",
    type=float,
    default=1.0,
    show_default=True,
    help="Replay step: queries for a window run before the window is ingested.",
)
@click.option("--workers", type=int, default=2, show_default=True, help="Query threads.")
@click.option(
    "--start",
    type=click.DateTime(),
    default=None,
    help="Ingest without scoring before this time (quick runs).",
)
@click.option("--until", type=click.DateTime(), default=None, help="Stop at this time.")
@click.option(
    "--sample-every",
    type=int,
    default=1,
    show_default=True,
    help="Score every n-th invoice only (quick runs).",
)
@click.option("--max-lines", type=int, default=None, help="Read only the first N lines.")
@click.option(
    "--all-views",
    is_flag=True,
    help="Keep the views no evaluated query reads (same answers, slower ingest).",
)
@click.option(
    "-f",
    "--for-user-param",
    "fu",
    multiple=True,
    metavar="NAME=VALUE",
    help="Extra for_user parameter (repeatable), e.g. -f variant=b.",
)
@click.option(
    "-a",
    "--also-bought-param",
    "ab",
    multiple=True,
    metavar="NAME=VALUE",
    help="Extra also_bought parameter (repeatable).",
)
def evaluate_command(
    project_dir: str | None,
    dataset: Path,
    fmt: str,
    k: int,
    out: Path,
    window_hours: float,
    workers: int,
    start: dt.datetime | None,
    until: dt.datetime | None,
    sample_every: int,
    max_lines: int | None,
    all_views: bool,
    fu: tuple[str, ...],
    ab: tuple[str, ...],
) -> None:
    """Replay DATASET in time order through the ingestion path into a throwaway embedded
    store and score the project's for_user and also_bought endpoints (asked before each
    purchase is ingested) against popularity and monthly co-occurrence baselines."""
    from redpoll.evaluation.plot import plot_series
    from redpoll.evaluation.replay import EvalConfig, evaluate

    settings = load(project_dir)
    config = EvalConfig(
        dataset=dataset,
        project_dir=settings.project_dir,
        k=k,
        window_hours=window_hours,
        workers=workers,
        max_lines=max_lines,
        start=start,
        until=until,
        sample_every=sample_every,
        all_views=all_views,
        for_user_params=_params(fu),
        also_bought_params=_params(ab),
        progress=lambda m: click.echo(m, err=True),
    )
    result = evaluate(config)
    out.mkdir(parents=True, exist_ok=True)
    summary = lifts(result.table)
    (out / "results.json").write_text(
        json.dumps({**json.loads(result.to_json()), "lifts": summary}, indent=2)
    )
    table = format_table(result.table, k)
    (out / "results.md").write_text(table + "\n")
    png = plot_series(result.series, k, out / "metrics.png")
    click.echo(table)
    for task, s in summary.items():
        ratio = s["ratio_vs_popularity_all"]
        click.echo(
            f"{task}: endpoint vs best baseline ({s['best_baseline']}) "
            f"{s['lift_vs_best']:+.1%} HitRate@{k}"
            + (f"; {ratio:.2f}x popularity_all" if ratio else "")
        )
    click.echo(f"timings: {result.timings}")
    click.echo(f"wrote {out / 'results.json'}, {out / 'results.md'}, {png}")
