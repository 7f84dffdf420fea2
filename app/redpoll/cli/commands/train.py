"""`redpoll train`: learn the item embeddings of `similar_items` from the stored events
(app/redpoll/embeddings, docs/embeddings.md), once, every N minutes (`--every`), or
just report the current model's freshness (`--status`); `--evaluate` scores the method
offline against also_bought on a data set instead (evaluation/similar_items.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import click

from redpoll.cli._backend import Backend, open_backend
from redpoll.cli._context import load, project_option
from redpoll.embeddings.factorize import DIMENSIONS
from redpoll.embeddings.training import BackendRunner, Runner, freshness, train
from redpoll.errors import ConfigError, RedpollError
from redpoll.settings import Settings

__all__ = ("train_command",)


def _runner(backend: Backend) -> Runner:
    """The backend's SQL, wherever it runs (in this process or through a server)."""
    return BackendRunner(backend)


def _say(message: str) -> None:
    click.echo(message, err=True)


def _train_once(settings: Settings, dims: int) -> None:
    with open_backend(settings, "redpoll train") as backend:
        runner = _runner(backend)
        try:
            result = train(runner, dims, say=_say)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        click.echo(
            f"model {result.model_version} trained at {result.trained_at:%Y-%m-%d %H:%M:%S}Z: "
            f"{result.items} items, rank {result.rank}, from {result.events} events "
            f"({result.contexts} contexts) in {result.seconds:.1f} s"
            + (
                f"; dropped old versions {result.dropped_versions}"
                if result.dropped_versions
                else ""
            )
        )


def _status(settings: Settings, as_json: bool) -> None:
    with open_backend(settings, "redpoll train --status") as backend:
        fresh = freshness(_runner(backend))
    if as_json:
        click.echo(json.dumps(fresh, default=str))
    elif fresh is None:
        click.echo("no model trained yet: run `redpoll train` (similar_items answers empty lists)")
    else:
        click.echo(
            f"model {fresh['model_version']} ({fresh['method']}) trained at "
            f"{fresh['trained_at']} UTC, {int(fresh['age_seconds'])} s ago: {fresh['items']} "
            f"items from {fresh['events']} events up to {fresh['data_until']}; "
            f"{fresh['events_since']} events ingested since"
        )


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM, so `--every` ends between trainings."""
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@click.command("train")
@project_option
@click.option(
    "--dims",
    type=click.IntRange(1, DIMENSIONS),
    default=DIMENSIONS,
    show_default=True,
    help="Singular vectors kept (the stored vectors are padded to 64).",
)
@click.option(
    "--every",
    "every_min",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Retrain every this many minutes until stopped (Ctrl-C, SIGTERM).",
)
@click.option("--status", is_flag=True, help="Only report the current model's freshness.")
@click.option("--json", "as_json", is_flag=True, help="With --status: one JSON object.")
@click.option(
    "--evaluate",
    "dataset",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Instead: score similar_items against also_bought on this Online Retail file.",
)
@click.option(
    "--cut",
    type=click.DateTime(),
    default=None,
    help="With --evaluate: train before this time, test after (default: 80% of events).",
)
@click.option(
    "--sample-every",
    type=int,
    default=1,
    show_default=True,
    help="With --evaluate: score every n-th test invoice only.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --evaluate: also write results.json and results.md here.",
)
def train_command(
    project_dir: str | None,
    dims: int,
    every_min: float | None,
    status: bool,
    as_json: bool,
    dataset: Path | None,
    cut: dt.datetime | None,
    sample_every: int,
    out: Path | None,
) -> None:
    """Learn one vector per item from the stored events and make it the current model.

    Reads every order's items and every session's viewed/carted/bought items from
    `events`, factorizes their PPMI co-occurrence (truncated SVD) and writes the vectors
    under a new model version; `similar_items` switches to it at once, never reading a
    half-written model. Runs through `redpoll serve` when it holds the store. Schedule it
    with --every or a timer (docs/embeddings.md).
    """
    settings = load(project_dir)
    if dataset is not None:
        _evaluate(settings, dataset, cut, sample_every, dims, out)
        return
    if status:
        _status(settings, as_json)
        return
    if every_min is None:
        _train_once(settings, dims)
        return
    with _stop_on_signals() as stop:
        while not stop.is_set():
            started = time.monotonic()
            try:
                _train_once(settings, dims)
            except RedpollError as exc:  # nothing to learn yet, store busy: next time
                _say(f"error: {exc.message}")
            stop.wait(max(0.0, every_min * 60 - (time.monotonic() - started)))


def _evaluate(
    settings: Settings,
    dataset: Path,
    cut: dt.datetime | None,
    sample_every: int,
    dims: int,
    out: Path | None,
) -> None:
    from redpoll.evaluation.similar_items import SimilarConfig, evaluate_similar, format_table

    result = evaluate_similar(
        SimilarConfig(
            dataset=dataset,
            project_dir=settings.project_dir,
            cut=cut,
            sample_every=sample_every,
            dims=dims,
            progress=_say,
        )
    )
    table = format_table(result)
    click.echo(table)
    click.echo(f"timings: {result.timings}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = result.as_dict()
        (out / "results.json").write_text(json.dumps(payload, indent=2))
        (out / "results.md").write_text(table + "\n")
        click.echo(f"wrote {out / 'results.json'}, {out / 'results.md'}")
