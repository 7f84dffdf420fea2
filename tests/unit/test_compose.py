"""docker-compose.yml cannot run here (no Docker engine): check its structure and wiring."""

from __future__ import annotations

from pathlib import Path

import yaml

from redpoll.clickhouse.client import parse_url

ROOT = Path(__file__).resolve().parents[2]


def test_compose_services_env_and_healthchecks() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"clickhouse", "redpanda", "redpoll"}
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"

    redpoll = services["redpoll"]
    assert redpoll["build"] == "."
    env = redpoll["environment"]
    target = parse_url(env["REDPOLL_CLICKHOUSE_URL"])
    assert target.host == "clickhouse" and target.port == 8123
    ch_env = services["clickhouse"]["environment"]
    assert (target.username, target.password, target.database) == (
        ch_env["CLICKHOUSE_USER"],
        ch_env["CLICKHOUSE_PASSWORD"],
        ch_env["CLICKHOUSE_DB"],
    )
    assert env["REDPOLL_KAFKA_BROKERS"].split(":")[0] == "redpanda"
    for dep in ("clickhouse", "redpanda"):
        assert redpoll["depends_on"][dep]["condition"] == "service_healthy"
    for volume_spec in (s.get("volumes", []) for s in services.values()):
        for spec in volume_spec:
            assert spec.split(":")[0] in compose["volumes"]


def test_dockerfile_installs_package_and_serves() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'pip install --no-cache-dir ".[kafka]"' in text
    assert "redpoll migrate up && exec redpoll serve" in text
