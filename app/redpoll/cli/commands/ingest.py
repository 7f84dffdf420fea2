"""`redpoll ingest ...`: Kafka consumers outside the server, their status, engine SQL."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from redpoll.cli._backend import open_backend, running_server
from redpoll.cli._context import load, project_option
from redpoll.errors import ConfigError, RedpollError

__all__ = ("ingest",)

STATUS_FILE = "kafka-status.json"

brokers_option = click.option(
    "--brokers", default=None, help="Kafka bootstrap servers (env REDPOLL_KAFKA_BROKERS)."
)


@click.group()
def ingest() -> None:
    """Kafka ingestion: run consumers, show their status, generate engine SQL."""


@ingest.command("kafka")
@project_option
@brokers_option
@click.option(
    "--datasource",
    "datasources",
    multiple=True,
    help="Only these data sources (default: every kafka/*.toml binding).",
)
def kafka_command(
    project_dir: str | None, brokers: str | None, datasources: tuple[str, ...]
) -> None:
    """Consume the project's Kafka bindings until SIGTERM/Ctrl-C (no HTTP server).

    Inserts through the same validation and writer as the events API; commits offsets
    only after the insert. Use it against a ClickHouse server when its Kafka engine is
    not an option; with an embedded store, `redpoll serve` runs the consumers itself.
    """
    from redpoll.ingest.service import IngestService
    from redpoll.kafka.consumer import KafkaIngestors
    from redpoll.store import Store

    settings = load(project_dir, kafka_brokers=brokers)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not settings.kafka_brokers:
        raise ConfigError("no Kafka brokers: set REDPOLL_KAFKA_BROKERS or pass --brokers")
    server = running_server(settings)
    if server is not None:
        server[1].close()
        raise RedpollError(
            f"`redpoll serve` (pid {server[0].pid}) holds this project's embedded store and "
            "runs its Kafka consumers itself; see `redpoll ingest status`"
        )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with Store.open(settings, "redpoll ingest kafka") as store:
        service = IngestService.for_store(store, settings)
        try:
            service.open_writers()  # crash repair (journal) before the first batch, as serve
            ingestors = KafkaIngestors(
                service, settings.project_dir, settings.kafka_brokers, only=set(datasources) or None
            )
            if not ingestors.ingestors:
                raise ConfigError(
                    'no Kafka binding with engine = "redpoll" (expected kafka/<datasource>.toml)'
                )
            status_path = settings.state_dir / STATUS_FILE
            settings.state_dir.mkdir(parents=True, exist_ok=True)
            ingestors.start()
            click.echo(
                f"consuming {[i.binding.topic for i in ingestors.ingestors]} from "
                f"{settings.kafka_brokers}; Ctrl-C to stop",
                err=True,
            )
            try:
                while not stop.wait(1.0):
                    ingestors.write_status(status_path)
            finally:
                ingestors.stop()
                with contextlib.suppress(OSError):
                    status_path.unlink()
        finally:
            service.close()


@ingest.command("status")
@project_option
@brokers_option
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
def status_command(project_dir: str | None, brokers: str | None, as_json: bool) -> None:
    """Consumer lag (from the broker), throughput and error counts per binding."""
    from redpoll.kafka.bindings import load_bindings
    from redpoll.kafka.lag import group_lag

    settings = load(project_dir, kafka_brokers=brokers)
    bindings = load_bindings(settings.project_dir)
    report: dict[str, Any] = {"process": _process_status(settings), "bindings": {}}
    for name, binding in bindings.items():
        entry: dict[str, Any] = {
            "topic": binding.topic,
            "group": binding.group,
            "engine": binding.engine,
        }
        if settings.kafka_brokers:
            entry["broker"] = group_lag(settings.kafka_brokers, binding, timeout=5)
        consumer = (report["process"].get("kafka") or {}).get(name)
        if consumer:
            entry["consumer"] = consumer
        report["bindings"][name] = entry
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    if not bindings:
        click.echo("no Kafka bindings (kafka/<datasource>.toml)")
    click.echo(f"consumer process: {report['process'].get('where', 'none running')}")
    for name, entry in report["bindings"].items():
        broker = entry.get("broker", {})
        lag = broker.get("lag", broker.get("error", "brokers not configured"))
        line = f"{name}: topic {entry['topic']} group {entry['group']} lag {lag}"
        consumer = entry.get("consumer")
        if consumer:
            line += (
                f" | {consumer['state']} {consumer['events_per_s']} ev/s, "
                f"{consumer['rows']} rows, {consumer['quarantined']} quarantined, "
                f"errors insert={consumer['insert_errors']} "
                f"broker={consumer['broker_errors']} commit={consumer['commit_errors']}"
            )
            if consumer.get("last_error"):
                line += f" | last error: {consumer['last_error']}"
        click.echo(line)


def _process_status(settings: Any) -> dict[str, Any]:
    """Status from the process running the consumers: the server, or `ingest kafka`."""
    server = running_server(settings)
    if server is not None:
        info, remote = server
        try:
            status = remote.ingest_status()
        except RedpollError as exc:
            return {"where": f"redpoll serve pid {info.pid} (no answer: {exc.message})"}
        finally:
            remote.close()
        return {"where": f"redpoll serve pid {info.pid} ({info.url})", **status}
    path = Path(settings.state_dir) / STATUS_FILE
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if _alive(int(data["pid"])) and time.time() - data["written_at"] < 30:
            return {"where": f"redpoll ingest kafka pid {data['pid']}", "kafka": data["kafka"]}
    return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


@ingest.command("kafka-sql")
@project_option
@brokers_option
@click.argument("datasource")
@click.option("--write", is_flag=True, help="Write it as the next file in migrations/.")
def kafka_sql_command(
    project_dir: str | None, brokers: str | None, datasource: str, write: bool
) -> None:
    """Print the ClickHouse Kafka-engine migration for DATASOURCE's binding (server mode)."""
    from redpoll.kafka.bindings import load_bindings
    from redpoll.kafka.sql import columns_query, engine_columns, kafka_engine_sql

    settings = load(project_dir, kafka_brokers=brokers)
    binding = load_bindings(settings.project_dir).get(datasource)
    if binding is None:
        raise ConfigError(f"no binding kafka/{datasource}.toml")
    if not settings.kafka_brokers:
        raise ConfigError(
            "no Kafka brokers: set REDPOLL_KAFKA_BROKERS or pass --brokers "
            "(the list as the ClickHouse server reaches the brokers)"
        )
    with open_backend(settings, "redpoll ingest kafka-sql") as backend:
        rows = json.loads(backend.sql(columns_query(datasource), "json"))["data"]
    columns, uses_landing = engine_columns(rows, datasource)
    text = kafka_engine_sql(
        binding, columns, uses_landing=uses_landing, brokers=settings.kafka_brokers
    )
    if not write:
        sys.stdout.write(text)
        return
    folder = settings.project_dir / "migrations"
    numbers = [int(p.name.split("_", 1)[0]) for p in folder.glob("[0-9]*_*.sql")]
    path = folder / f"{max(numbers, default=0) + 1:04d}_kafka_{datasource}.sql"
    path.write_text(text)
    click.echo(f"wrote {path}")
