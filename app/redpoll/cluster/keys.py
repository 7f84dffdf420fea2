"""The sharding key and its hash, shared by the router, Kafka and the cluster DDL.

The key (docs/adr/0023-cluster-sharding.md): `u:<user_id>` when the event has a user,
else `o:<order_id>` when it has an order, else `e:<event_id>`. The shard is
`kafka_murmur2(key) % shards`: Kafka's default partitioner hash (Java client, librdkafka
`partitioner=murmur2_random`), which ClickHouse computes as `kafkaMurmurHash`, so a
`Distributed` table's sharding key (`SHARDING_KEY_SQL`) agrees with the router. With a
topic of P = k * shards partitions and messages keyed by `routing_key`, partition p holds
only events of shard `p % shards` (`partitions_of_shard`).
"""

from __future__ import annotations

from functools import lru_cache

__all__ = (
    "SHARDING_KEY_SQL",
    "kafka_murmur2",
    "kafka_partition",
    "partitions_of_shard",
    "routing_key",
    "shard_of",
)

#: The same key and hash as `routing_key` + `kafka_murmur2`, as a ClickHouse expression
#: over the event columns (the sharding key of the `Distributed` events table).
SHARDING_KEY_SQL = (
    "kafkaMurmurHash(multiIf(user_id != '', concat('u:', user_id), "
    "order_id != '', concat('o:', order_id), concat('e:', event_id)))"
)

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def kafka_murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2(data) & 0x7fffffff` (seed 0x9747b28c): the partitioner's hash."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length - whole
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h & 0x7FFFFFFF


def routing_key(user_id: str, order_id: str, event_id: str) -> str:
    """The event's sharding key (and Kafka message key)."""
    if user_id:
        return "u:" + user_id
    if order_id:
        return "o:" + order_id
    return "e:" + event_id


@lru_cache(maxsize=65_536)
def _hash(key: str) -> int:
    # users and orders repeat: caching spares the pure-Python hash on most events
    return kafka_murmur2(key.encode("utf-8"))


def shard_of(key: str, shards: int) -> int:
    """The shard (0-based, in the cluster's configuration order) that owns `key`."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    return _hash(key) % shards


def kafka_partition(key: str, partitions: int) -> int:
    """The partition Kafka's murmur2 partitioner gives a message keyed by `key`."""
    return _hash(key) % partitions


def partitions_of_shard(shard: int, shards: int, partitions: int) -> list[int]:
    """The partitions whose messages all belong to `shard` (a consumer per shard reads
    these). Needs `partitions` to be a multiple of `shards`, else a partition would mix
    shards."""
    if partitions % shards:
        raise ValueError(
            f"a topic of {partitions} partitions cannot be split over {shards} shards:"
            " use a multiple of the shard count"
        )
    return [p for p in range(partitions) if p % shards == shard]
