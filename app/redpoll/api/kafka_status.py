"""Kafka consumers inside `redpoll serve`: their lifespan and their status.

When `kafka_brokers` is set and the project has `kafka/<datasource>.toml` bindings with
`engine = "redpoll"` (the default), one consumer per binding starts after the ingestion
service and inserts through `AppState.ingest`, the same service (and writer) as the
HTTP events API. Status: `GET /redpoll/v1/admin/ingest/status` (admin token; used by
`redpoll ingest status`) and a `kafka` entry in the `/v0/ready` body. Kafka problems do
not make the server "not ready": it still serves queries and the events API.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Litestar, get
from litestar.datastructures import State

from redpoll.api.auth import admin_guard
from redpoll.api.state import app_state

__all__ = ("KafkaStatusController", "kafka_lifespan")

log = logging.getLogger("redpoll.kafka")


@contextlib.asynccontextmanager
async def kafka_lifespan(app: Litestar) -> AsyncIterator[None]:
    """The project's Kafka consumers (after the ingestion service, which they insert
    through); on shutdown, before it: flush, commit, leave the group."""
    from redpoll.kafka.bindings import load_bindings
    from redpoll.kafka.consumer import KafkaIngestors

    wiring = app_state(app.state)
    settings = wiring.settings
    bindings = load_bindings(settings.project_dir)
    if bindings and not settings.kafka_brokers:
        log.info("kafka bindings %s ignored: kafka_brokers is not set", sorted(bindings))
    if not bindings or not settings.kafka_brokers:
        yield
        return
    ingestors = KafkaIngestors(wiring.ingest, settings.project_dir, settings.kafka_brokers)
    wiring.kafka = ingestors.start()
    wiring.readiness_probes.append(lambda: {"kafka": ingestors.status()})
    log.info("kafka consumers started: %s", [i.binding.datasource for i in ingestors.ingestors])
    try:
        yield
    finally:
        ingestors.stop()


class KafkaStatusController(Controller):
    path = "/redpoll/v1/admin/ingest"
    guards = [admin_guard]

    @get("/status", sync_to_thread=False)
    def status(self, state: State) -> dict[str, Any]:
        """Ingestion status: Kafka consumers and per-data-source insert counters."""
        wiring = app_state(state)
        return {
            "kafka": wiring.kafka.status() if wiring.kafka is not None else {},
            "datasources": wiring.ingest.status(),
        }
