"""The sharding key's hash agrees everywhere it is computed: the router (Python), a
`Distributed` table (ClickHouse's `kafkaMurmurHash` in `SHARDING_KEY_SQL`) and Kafka's
murmur2 partitioner (librdkafka, against the mock broker), so an event keyed by
`routing_key` lands on the shard whose consumer reads its partition."""

from __future__ import annotations

import random
import string
from typing import Any

import pytest

from redpoll.clickhouse.client import Client
from redpoll.cluster.keys import (
    SHARDING_KEY_SQL,
    kafka_murmur2,
    kafka_partition,
    partitions_of_shard,
    routing_key,
    shard_of,
)


def _keys(n: int) -> list[str]:
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "é€-_:"
    keys = ["", "a", "ab", "abc", "abcd", "u:17850", "o:536365"]
    keys += ["".join(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(n)]
    return keys


def test_python_hash_equals_clickhouse_kafka_murmur_hash(admin_client: Client) -> None:
    keys = _keys(2000)
    got = admin_client.query(
        "SELECT kafkaMurmurHash(k) FROM (SELECT arrayJoin({keys:Array(String)}) AS k)",
        parameters={"keys": keys},
    ).result_rows
    assert [int(r[0]) for r in got] == [kafka_murmur2(k.encode()) for k in keys]


def test_sharding_key_sql_routes_like_the_router(admin_client: Client) -> None:
    rng = random.Random(3)
    rows = [
        (f"e{i}", rng.choice(["", "u1", "u2", "17850"]), rng.choice(["", "o1", "536365"]))
        for i in range(500)
    ]
    got = admin_client.query(
        f"SELECT {SHARDING_KEY_SQL} % 3 FROM (SELECT"
        " tupleElement(r, 1) AS event_id, tupleElement(r, 2) AS user_id,"
        " tupleElement(r, 3) AS order_id"
        " FROM (SELECT arrayJoin({rows:Array(Tuple(String, String, String))}) AS r))",
        parameters={"rows": rows},
    ).result_rows
    assert [int(r[0]) for r in got] == [shard_of(routing_key(u, o, e), 3) for e, u, o in rows]


def test_partitions_of_a_shard_hold_only_its_keys() -> None:
    for key in _keys(500):
        shard = shard_of(key, 2)
        assert kafka_partition(key, 8) in partitions_of_shard(shard, 2, 8)
    assert partitions_of_shard(1, 2, 8) == [1, 3, 5, 7]
    with pytest.raises(ValueError, match="multiple of the shard count"):
        partitions_of_shard(0, 3, 8)


def test_librdkafka_murmur2_partitioner_agrees(redpoll_kafka: Any) -> None:
    """A producer with `partitioner=murmur2_random` and the routing key as message key
    puts each event in the partition `kafka_partition` computes."""
    from confluent_kafka import Producer

    redpoll_kafka.create_topic("events", 8)
    producer = Producer(
        {"bootstrap.servers": redpoll_kafka.bootstrap, "partitioner": "murmur2_random"}
    )
    placed: dict[str, int] = {}

    def done(err: Any, msg: Any) -> None:
        assert err is None, err
        placed[msg.key().decode()] = msg.partition()

    keys = [k for k in _keys(300) if k]  # murmur2_random sends empty keys anywhere
    for key in keys:
        producer.produce("events", key=key.encode(), value=b"{}", on_delivery=done)
    assert producer.flush(30) == 0
    assert placed == {k: kafka_partition(k, 8) for k in keys}
