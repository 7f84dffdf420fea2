"""Kafka ingestion: bindings (`kafka/<datasource>.toml`), Redpoll's own consumer, broker
lag, and the ClickHouse Kafka-engine SQL for server mode (docs/kafka.md).

Apart from the HTTP/file path (`redpoll.ingest`), whose `IngestService` the consumer
inserts through, so both share one validation, quarantine and writer.
"""
