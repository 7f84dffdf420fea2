"""docker-compose.cluster.yml cannot run here (no Docker engine): check it as text.

Its schema validity and build context are checked with the other compose files by
tests/unit/test_compose.py; here: the topology the issue asks for (2 shards x 2
replicas, 3 Keeper nodes, a broker with a partitioned topic, 2 API replicas behind a load
balancer), pinned image tags, no secret with a value or a default, only the load balancer
published (on loopback by default), and the config files under deploy/cluster/ agreeing
with each other and with the cluster DDL (macros, cluster names, Keeper quorum)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from redpoll.clickhouse.client import parse_url
from redpoll.cluster.keys import partitions_of_shard
from redpoll.cluster.shards import shard_targets
from tests.support.compose import (
    OPTIONAL_EMPTY_REF,
    REQUIRED_REF,
    SECRET_NAME,
    MissingVariable,
    interpolated,
    published_host_ips,
    service_env,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.cluster.yml"
TEST_ENV = {
    "CLICKHOUSE_PASSWORD": "test-ch-password",
    "CLICKHOUSE_CLUSTER_SECRET": "test-cluster-secret",
    "CLICKHOUSE_INTERSERVER_PASSWORD": "test-interserver",
    "REDPOLL_ADMIN_TOKEN": "test-admin",
}


def load() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merges `<<:` anchors
    return document


def services() -> dict[str, Any]:
    return dict(interpolated(load(), TEST_ENV)["services"])


def test_topology() -> None:
    names = set(services())
    assert {n for n in names if n.startswith("ch-")} == {"ch-s1r1", "ch-s1r2", "ch-s2r1", "ch-s2r2"}
    assert {n for n in names if n.startswith("keeper")} == {"keeper1", "keeper2", "keeper3"}
    assert {n for n in names if n.startswith("redpoll-api")} == {"redpoll-api-1", "redpoll-api-2"}
    assert {"redpanda", "redpanda-topics", "lb"} <= names
    for name, service in services().items():
        if name != "redpanda-topics":  # a one-shot job
            assert "healthcheck" in service, f"{name} has no healthcheck"


def test_every_image_tag_is_pinned() -> None:
    for name, service in services().items():
        if "build" in service:
            continue
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+(\.\d+)?(-[\w.]+)?", image), (name, image)


def test_no_literal_secret_and_only_the_load_balancer_is_published() -> None:
    for name, service in load()["services"].items():
        for key, value in service_env(service).items():
            if SECRET_NAME.search(key) and value is not None:
                assert REQUIRED_REF.fullmatch(value) or OPTIONAL_EMPTY_REF.fullmatch(value), (
                    name,
                    key,
                )
            userinfo = re.search(r"://[^/@:]*:(?P<password>[^@]*)@", value or "")
            if userinfo:
                assert REQUIRED_REF.fullmatch(userinfo["password"]), (name, key)
        if name != "lb":
            assert "ports" not in service, f"{name} publishes a port"
    assert published_host_ips(services()["lb"]["ports"]) == ["127.0.0.1"]


@pytest.mark.parametrize("variable", sorted(TEST_ENV))
def test_compose_refuses_to_start_without_a_required_secret(variable: str) -> None:
    env = {k: v for k, v in TEST_ENV.items() if k != variable}
    with pytest.raises(MissingVariable, match=f"^{variable}:"):
        interpolated(load(), env)


def test_env_example_documents_the_cluster_secrets() -> None:
    example = (ROOT / ".env.example").read_text()
    for variable in TEST_ENV:
        assert re.search(rf"^#?\s*{variable}=", example, re.MULTILINE), variable


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> repository file, for the bind mounts of ./deploy files."""
    out = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith("./"):
            out[target] = ROOT / source
    return out


def test_clickhouse_nodes_config() -> None:
    """Each node: the shared cluster file and its own macros (shard, unique replica);
    the `redpoll` cluster lists 2 shards of 2 replicas that are exactly the nodes, and
    `redpoll_all` (the catalog's fan-out, app/redpoll/cluster/ddl.py) all four."""
    nodes = {n: s for n, s in services().items() if n.startswith("ch-")}
    seen = set()
    for name, service in nodes.items():
        mounts = _mounts(service)
        assert all(path.is_file() for path in mounts.values()), mounts
        macros = ET.parse(mounts["/etc/clickhouse-server/config.d/macros.xml"]).getroot()
        shard, replica = macros.findtext("macros/shard"), macros.findtext("macros/replica")
        assert (f"ch-s{shard}r{name[-1]}", replica) == (name, name)
        assert macros.findtext("interserver_http_host") == name == service["hostname"]
        seen.add((shard, replica))
        env = service["environment"]
        assert env["CLICKHOUSE_DB"] == "redpoll"
    assert len(seen) == 4
    cluster = ET.parse(ROOT / "deploy/cluster/clickhouse/cluster.xml").getroot()
    shards = [
        [r.findtext("host") for r in shard.findall("replica")]
        for shard in cluster.findall("remote_servers/redpoll/shard")
    ]
    assert shards == [["ch-s1r1", "ch-s1r2"], ["ch-s2r1", "ch-s2r2"]]
    everyone = cluster.findall("remote_servers/redpoll_all/shard")
    assert len(everyone) == 1 and everyone[0].findtext("internal_replication") == "false"
    assert {r.findtext("host") for r in everyone[0].findall("replica")} == set(nodes)
    keepers = [n.findtext("host") for n in cluster.findall("zookeeper/node")]
    assert keepers == ["keeper1", "keeper2", "keeper3"]
    for secret in cluster.iter("secret"):
        assert secret.get("from_env") == "CLICKHOUSE_CLUSTER_SECRET" and not secret.text
    assert cluster.find("interserver_http_credentials/password").get("from_env")  # type: ignore[union-attr]


def test_keeper_quorum_config() -> None:
    for n in (1, 2, 3):
        service = services()[f"keeper{n}"]
        config = _mounts(service)["/etc/clickhouse-keeper/keeper_config.xml"]
        root = ET.parse(config).getroot()
        assert root.findtext("keeper_server/server_id") == str(n)
        raft = root.findall("keeper_server/raft_configuration/server")
        assert [s.findtext("hostname") for s in raft] == ["keeper1", "keeper2", "keeper3"]


def test_api_replicas_and_balancer() -> None:
    """Both API replicas run in cluster mode on different shards' nodes; only the first
    migrates (the image's default command), the second serves once it is healthy."""
    all_services = services()
    first, second = all_services["redpoll-api-1"], all_services["redpoll-api-2"]
    for api in (first, second):
        assert api["environment"]["REDPOLL_CLUSTER"] == "redpoll"
        assert api["build"] == "."
    assert "@ch-s1r1:8123/redpoll" in first["environment"]["REDPOLL_CLICKHOUSE_URL"]
    assert "@ch-s2r1:8123/redpoll" in second["environment"]["REDPOLL_CLICKHOUSE_URL"]
    assert "command" not in first and second["command"] == ["redpoll", "serve"]
    nginx = (ROOT / "deploy/cluster/nginx.conf").read_text()
    upstreams = dict(re.findall(r"upstream (\w+) \{([^}]*)\}", nginx))
    members = {
        name: re.findall(r"server (redpoll-api-\d):8000", body) for name, body in upstreams.items()
    }
    assert members == {
        "redpoll_api": ["redpoll-api-1", "redpoll-api-2"],
        "redpoll_ingest": ["redpoll-api-1"],
    }
    events_route = re.search(r"location = /v0/events \{([^}]*)\}", nginx)
    assert events_route and "proxy_pass http://redpoll_ingest;" in events_route.group(1)


def test_one_ingesting_replica_writes_each_shard_in_cluster_order() -> None:
    """The first API replica is the writer process: one writer per shard, on the first
    replica of shard 1 then shard 2 (remote_servers order, app/redpoll/cluster/shards.py),
    and the Kafka consumers; the second has neither (it refuses events)."""
    all_services = services()
    first, second = all_services["redpoll-api-1"], all_services["redpoll-api-2"]
    targets = shard_targets(
        first["environment"]["REDPOLL_CLUSTER_SHARD_URLS"],
        "redpoll",
        parse_url(first["environment"]["REDPOLL_CLICKHOUSE_URL"], "redpoll"),
    )
    assert [(t.host, t.database) for t in targets] == [
        ("ch-s1r1", "redpoll_shard"),
        ("ch-s2r1", "redpoll_shard"),
    ]
    assert first["environment"]["REDPOLL_KAFKA_BROKERS"] == "redpanda:9092"
    assert "REDPOLL_CLUSTER_SHARD_URLS" not in second["environment"]
    assert "REDPOLL_KAFKA_BROKERS" not in second["environment"]


def test_topic_partitions_split_evenly_over_the_shards() -> None:
    command = services()["redpanda-topics"]["entrypoint"]
    partitions = int(command[command.index("--partitions") + 1])
    shards = 2
    owned = [p for s in range(shards) for p in partitions_of_shard(s, shards, partitions)]
    assert sorted(owned) == list(range(partitions))
