"""`redpoll evaluate`: offline evaluation of the recommendation endpoints on a real data
set replayed through the ingestion path (app/redpoll/evaluation, docs/recommendations.md):
the replay (default); with `--task next-basket`, the next-basket protocol of the
literature against G-TopFreq, P-TopFreq and a TIFUKNN-style baseline; with `--task
repetition`, the repetition control of for_user with simulated impressions."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from redpoll.cli._context import load, project_option

if TYPE_CHECKING:
    from redpoll.evaluation.repetition import RepetitionConfig

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
    "--task",
    type=click.Choice(["replay", "next-basket", "repetition"]),
    default="replay",
    show_default=True,
    help="replay: score for_user and also_bought before every purchase; next-basket: "
    "predict each customer's last basket (3-50 items, >= 3 baskets) from everything "
    "before it (Recall/NDCG, repeat and explore parts); repetition: replay sampled users' "
    "page views with simulated impressions and clicks, for_user's repetition control off "
    "and on.",
)
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
    help="Ingest without scoring before this time (quick runs); repetition: test "
    "invoices from this time (default: the last 90 days).",
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
@click.option(
    "--ingest",
    type=click.Choice(["incremental", "once"]),
    default="incremental",
    show_default=True,
    help="next-basket: feed the store up to each test basket (incremental) or load every "
    "event first and rely on the endpoint's now= (once).",
)
@click.option(
    "--strict-params",
    is_flag=True,
    help="next-basket: fail when for_user does not declare a -f parameter (default: "
    "leave it out with a warning).",
)
@click.option(
    "--baselines-only",
    is_flag=True,
    help="next-basket: score the baselines only (no store, no endpoint).",
)
@click.option(
    "-t",
    "--tifu-param",
    "tifu",
    multiple=True,
    metavar="NAME=VALUE",
    help="next-basket: TIFUKNN setting (repeatable): neighbours, within_decay, "
    "group_decay, groups, alpha.",
)
@click.option(
    "--users",
    type=click.IntRange(0),
    default=100,
    show_default=True,
    help="repetition: customers sampled (stable hash of the id; 0 = all).",
)
@click.option(
    "--requests-per-day",
    type=click.IntRange(1, 1440),
    default=4,
    show_default=True,
    help="repetition: page views a day (evenly spaced) before each test invoice.",
)
@click.option(
    "--request-days",
    type=float,
    default=2.0,
    show_default=True,
    help="repetition: days of page views before each test invoice.",
)
@click.option(
    "--max-impressions",
    type=click.IntRange(1, 1000),
    default=3,
    show_default=True,
    help="repetition: for_user's max_impressions in the run with the control on (and the "
    "k of the 'shown >= k times' count).",
)
@click.option(
    "--impression-hours",
    type=click.IntRange(1, 2160),
    default=24,
    show_default=True,
    help="repetition: for_user's impression_hours (and the h of the count).",
)
@click.option(
    "--click-share",
    type=click.FloatRange(0, 1),
    default=1.0,
    show_default=True,
    help="repetition: share of shown items of the next invoice the user clicks.",
)
@click.option(
    "--cross-check",
    is_flag=True,
    help="repetition: with the control on, also ask with it off and check that exactly "
    "the items the Python count marks are left out (one more call per request).",
)
def evaluate_command(
    project_dir: str | None,
    task: str,
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
    ingest: str,
    strict_params: bool,
    baselines_only: bool,
    tifu: tuple[str, ...],
    users: int,
    requests_per_day: int,
    request_days: float,
    max_impressions: int,
    impression_hours: int,
    click_share: float,
    cross_check: bool,
) -> None:
    """Replay DATASET in time order through the ingestion path into a throwaway embedded
    store and score the project's for_user and also_bought endpoints (asked before each
    purchase is ingested) against popularity and monthly co-occurrence baselines.

    With --task next-basket: every customer's last basket is predicted by for_user
    (limit k, exclude_purchased=false, now just before the basket) and by G-TopFreq,
    P-TopFreq and a TIFUKNN-style baseline from everything before it; writes
    next_basket.json and next_basket.md (docs/recommendations.md, "Next-basket
    evaluation").

    With --task repetition: sampled customers open the page --requests-per-day times a
    day before each test invoice; for_user's answers become impression events (and the
    items they then buy, clicks), ingested as real events; run with max_impressions=0
    and with --max-impressions, each on a fresh store; writes repetition.json and
    repetition.md (docs/recommendations.md, "Repetition control, measured")."""
    if task == "repetition":
        from redpoll.evaluation.repetition import RepetitionConfig

        settings = load(project_dir)
        _repetition(
            RepetitionConfig(
                dataset=dataset,
                project_dir=settings.project_dir,
                k=k,
                users=users,
                start=start,
                until=until,
                max_lines=max_lines,
                requests_per_day=requests_per_day,
                request_days=request_days,
                max_impressions=max_impressions,
                impression_hours=impression_hours,
                click_share=click_share,
                cross_check=cross_check,
                workers=workers,
                for_user_params=_params(fu),
                all_views=all_views,
                progress=lambda m: click.echo(m, err=True),
            ),
            out,
        )
        return
    if task == "next-basket":
        _next_basket(
            project_dir,
            dataset,
            k,
            out,
            workers,
            until,
            max_lines,
            all_views,
            _params(fu),
            ingest,
            strict_params,
            baselines_only,
            _params(tifu),
        )
        return
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


def _next_basket(
    project_dir: str | None,
    dataset: Path,
    k: int,
    out: Path,
    workers: int,
    until: dt.datetime | None,
    max_lines: int | None,
    all_views: bool,
    for_user_params: dict[str, Any],
    ingest: str,
    strict_params: bool,
    baselines_only: bool,
    tifu: dict[str, Any],
) -> None:
    from redpoll.evaluation.basket_baselines import TifuParams
    from redpoll.evaluation.next_basket import (
        NextBasketConfig,
        UndeclaredParameterError,
        evaluate_next_basket,
    )

    settings = load(project_dir)
    try:
        tifu_params = TifuParams(
            neighbours=int(tifu.pop("neighbours", TifuParams.neighbours)),
            groups=int(tifu.pop("groups", TifuParams.groups)),
            within_decay=float(tifu.pop("within_decay", TifuParams.within_decay)),
            group_decay=float(tifu.pop("group_decay", TifuParams.group_decay)),
            alpha=float(tifu.pop("alpha", TifuParams.alpha)),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tifu-param") from None
    if tifu:
        unknown = ", ".join(sorted(tifu))
        raise click.BadParameter(
            f"unknown TIFUKNN setting(s): {unknown}", param_hint="--tifu-param"
        )
    config = NextBasketConfig(
        project_dir=settings.project_dir,
        dataset=dataset,
        k=k,
        tifu=tifu_params,
        endpoint=not baselines_only,
        for_user_params=for_user_params,
        strict_params=strict_params,
        ingest="once" if ingest == "once" else "incremental",
        workers=workers,
        max_lines=max_lines,
        until=until,
        all_views=all_views,
        progress=lambda m: click.echo(m, err=True),
    )
    try:
        result = evaluate_next_basket(config)
    except UndeclaredParameterError as exc:
        raise click.ClickException(str(exc)) from None
    _write(out, "next_basket", result.to_json(), result.markdown())
    lift = result.lift()
    if lift:
        click.echo(
            "for_user vs the best of P-TopFreq and TIFUKNN: "
            + "; ".join(
                f"{metric} {v['ratio']:.2f}x ({v['best_baseline']})"
                for metric, v in lift.items()
                if v["ratio"] is not None
            )
            + f" (target >= 1.05x); for_user parameters {result.params['for_user']}"
        )
        if result.params["for_user_params_ignored"]:
            ignored = ", ".join(result.params["for_user_params_ignored"])
            click.echo(f"left out (for_user does not declare them): {ignored}")
    _done(out, "next_basket", result.counts, result.timings)


def _repetition(config: RepetitionConfig, out: Path) -> None:
    from redpoll.evaluation.repetition import evaluate_repetition

    try:
        result = evaluate_repetition(config)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _write(out, "repetition", result.to_json(), result.markdown())
    on = result.run("on")
    if on["cross_checked"]:
        click.echo(
            f"cross-check: {on['cross_checked']} answers with the control on, "
            f"{on['cross_mismatches']} differ from the answer off minus the Python count"
        )
    click.echo(f"parameters: {result.params}")
    _done(out, "repetition", result.counts, result.timings)


def _write(out: Path, stem: str, json_text: str, table: str) -> None:
    """A task's result as `<stem>.json` and its table as `<stem>.md`; the table printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json_text + "\n")
    (out / f"{stem}.md").write_text(table + "\n")
    click.echo(table)


def _done(out: Path, stem: str, counts: dict[str, Any], timings: dict[str, float]) -> None:
    click.echo(f"counts: {counts}")
    click.echo(f"timings: {timings}")
    click.echo(f"wrote {out / (stem + '.json')}, {out / (stem + '.md')}")
