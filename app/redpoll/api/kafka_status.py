"""Kafka consumers inside `redpoll serve`: startup/shutdown hooks and their status.

When `kafka_brokers` is set and the project has `kafka/<datasource>.toml` bindings with
`engine = "redpoll"` (the default), one consumer per binding starts after the ingestion
service and inserts through `app.state.ingest`, the same service (and writer) as the
HTTP events API. Status: `GET /redpoll/v1/admin/ingest/status` (admin token; used by
`redpoll ingest status`) and a `kafka` entry in the `/v0/ready` body. Kafka problems do
not make the server "not ready": it still serves queries and the events API.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Controller, get
from litestar.datastructures import State

from redpoll.api.admin import admin_guard

__all__ = ("KafkaStatusController", "start_kafka", "stop_kafka")

log = logging.getLogger("redpoll.kafka")


def start_kafka(app: Any) -> None:
    """Startup hook (after `start_ingest`): start the project's Kafka consumers."""
    from redpoll.ingest.kafka import KafkaIngestors
    from redpoll.ingest.kafka_bindings import load_bindings

    settings = app.state.settings
    app.state.kafka = None
    bindings = load_bindings(settings.project_dir)
    if not bindings:
        return
    if not settings.kafka_brokers:
        log.info("kafka bindings %s ignored: kafka_brokers is not set", sorted(bindings))
        return
    ingestors = KafkaIngestors(app.state.ingest, settings.project_dir, settings.kafka_brokers)
    app.state.kafka = ingestors.start()
    probes = list(app.state.get("readiness_probes", ()))
    probes.append(lambda: {"kafka": ingestors.status()})
    app.state.readiness_probes = probes
    log.info("kafka consumers started: %s", [i.binding.datasource for i in ingestors.ingestors])


def stop_kafka(app: Any) -> None:
    """Shutdown hook (before `stop_ingest`): flush, commit, leave the group."""
    ingestors = getattr(app.state, "kafka", None)
    if ingestors is not None:
        ingestors.stop()


class KafkaStatusController(Controller):
    path = "/redpoll/v1/admin/ingest"
    guards = [admin_guard]

    @get("/status", sync_to_thread=False)
    def status(self, state: State) -> dict[str, Any]:
        """Ingestion status: Kafka consumers and per-data-source insert counters."""
        ingestors = state.get("kafka")
        service = state.get("ingest")
        return {
            "kafka": ingestors.status() if ingestors is not None else {},
            "datasources": service.status() if service is not None else {},
        }
