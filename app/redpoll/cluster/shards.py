"""Where each shard's writer writes, from the setting `cluster_shard_urls`.

Cluster mode (docs/cluster.md, docs/adr/0023-cluster-sharding.md) runs one `EventWriter`
per shard, each on one replica of its shard (the writer replica), in the order of
`remote_servers`, so that the router's shard i (`keys.shard_of`) is ClickHouse's shard
i + 1. A URL names that node; its database is `<database>_shard` (`ddl.shard_database`)
unless the URL names one: `?database=x`, or for http(s) the path. An embedded URL
(`chdb:///path?database=x`) must use the store's own data directory, because chDB opens
one data directory per process: the simulation in tests/test_cluster_ingest.py runs
every shard as a database of that one store.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qs, urlsplit

from redpoll.clickhouse.client import Target, parse_url
from redpoll.cluster.ddl import shard_database
from redpoll.errors import ConfigError

__all__ = ("shard_targets",)


def shard_targets(urls: str, database: str, store: Target) -> list[Target]:
    """The writer targets of `cluster_shard_urls` (empty: single node, no shards).

    Raises:
        ConfigError: a URL that is not chdb/http(s), an embedded one on another data
            directory than `store`'s, or two shards on the same node and database.
    """
    targets: list[Target] = []
    for raw in urls.split(","):
        url = raw.strip()
        if not url:
            continue
        parts = urlsplit(url)
        named = parse_qs(parts.query).get("database", [""])[0]
        base = url.split("?", 1)[0]
        if parts.scheme in {"http", "https"} and not named:
            named = parts.path.strip("/")
        target = parse_url(base, named or shard_database(database))
        if target.embedded and (not store.embedded or target.path != store.path):
            raise ConfigError(
                f"cluster_shard_urls: {url!r} is embedded but not the store's data directory "
                f"({store.describe()}): chDB opens one data directory per process"
            )
        targets.append(target)
    seen = {dataclasses.replace(t, username="", password="") for t in targets}
    if len(seen) != len(targets):
        raise ConfigError(
            "cluster_shard_urls names one node and database twice: one writer per shard"
        )
    return targets
