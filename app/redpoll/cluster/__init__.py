"""Cluster mode: how events are routed to shards and how migrations render on a
ClickHouse cluster (docs/adr/0023-cluster-sharding.md, docs/cluster.md)."""
