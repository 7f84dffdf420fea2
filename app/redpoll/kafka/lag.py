"""Consumer-group lag of a Kafka binding, read from the broker (committed vs end offsets).

Used by `redpoll ingest status` (no Redpoll process needed) and by tests waiting for a
consumer to catch up.
"""

from __future__ import annotations

from typing import Any

from redpoll.kafka.bindings import KafkaBinding

__all__ = ("GroupLag", "group_lag")


class GroupLag:
    """Reads a binding's consumer-group lag from the broker, as often as needed.

    Keeps one client (no group membership: it never subscribes) so repeated reads, e.g. a
    test polling until a consumer caught up, cost a few requests, not a new client.
    """

    def __init__(self, brokers: str, binding: KafkaBinding) -> None:
        from confluent_kafka import Consumer

        self.binding = binding
        config = binding.consumer_config(brokers)
        config["log_level"] = 0  # a broker outage is reported in the result, not logged
        self._consumer = Consumer(config)

    def read(self, timeout: float = 10) -> dict[str, Any]:
        """`{"topic", "group", "lag", "partitions": {p: {committed, end, lag}}}`, or
        `{"topic", "group", "error"}` when the broker cannot be asked."""
        from confluent_kafka import KafkaException, TopicPartition

        binding = self.binding
        try:
            metadata = self._consumer.list_topics(binding.topic, timeout=timeout)
            topic = metadata.topics.get(binding.topic)
            if topic is None or topic.error is not None:
                return {
                    "topic": binding.topic,
                    "group": binding.group,
                    "error": str(topic.error if topic else "unknown"),
                }
            partitions = [TopicPartition(binding.topic, p) for p in sorted(topic.partitions)]
            committed = self._consumer.committed(partitions, timeout=timeout)
            by_partition: dict[str, dict[str, int]] = {}
            total = 0
            for tp in committed:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=timeout
                )
                position = tp.offset if tp.offset >= 0 else low
                lag = max(0, high - position)
                total += lag
                by_partition[str(tp.partition)] = {"committed": tp.offset, "end": high, "lag": lag}
        except KafkaException as exc:
            return {"topic": binding.topic, "group": binding.group, "error": str(exc)}
        return {
            "topic": binding.topic,
            "group": binding.group,
            "lag": total,
            "partitions": by_partition,
        }

    def caught_up(self, timeout: float = 5) -> bool:
        """Every partition's committed offset is at its end (an empty partition counts)."""
        lag = self.read(timeout)
        return lag.get("lag") == 0 and all(
            p["committed"] >= 0 or p["end"] == 0 for p in lag["partitions"].values()
        )

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> GroupLag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def group_lag(brokers: str, binding: KafkaBinding, timeout: float = 10) -> dict[str, Any]:
    """Lag of a binding's consumer group as the broker sees it (committed vs end offsets).

    Independent of any Redpoll process: it reads the group's committed offsets without
    joining the group.
    """
    with GroupLag(brokers, binding) as probe:
        return probe.read(timeout)
