"""docker-compose.yml cannot run here (no Docker engine): validate it against the Compose
Specification's JSON schema (as vendored by check-jsonschema), check that every image it
builds finds what its Dockerfile copies, and check the wiring between services."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from redpoll.clickhouse.client import parse_url

ROOT = Path(__file__).resolve().parents[2]


COMPOSE_FILES = sorted(ROOT.glob("docker-compose*.yml"))


def compose_schema() -> dict:  # type: ignore[type-arg]
    # located without importing check_jsonschema (its CLI needs a newer click than
    # tinybird-sdk allows); only the vendored schema file is used
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None and spec.submodule_search_locations, "pip install check-jsonschema"
    package = Path(next(iter(spec.submodule_search_locations)))
    vendored = package / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(vendored.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_follows_the_compose_specification(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    validator = jsonschema.Draft202012Validator(compose_schema())
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]
    assert not errors, errors


def dockerfile_sources(dockerfile: Path) -> list[str]:
    """The local paths a Dockerfile's COPY/ADD instructions read (not `--from` stages)."""
    sources: list[str] = []
    logical = dockerfile.read_text().replace("\\\n", " ").splitlines()
    for line in logical:
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() not in {"COPY", "ADD"}:
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources.extend(args[:-1])
    return sources


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_build_context_holds_what_its_dockerfile_copies(path: Path) -> None:
    services = yaml.safe_load(path.read_text())["services"]
    built = 0
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = context / (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert dockerfile.is_file(), f"{name}: no {dockerfile}"
        for source in dockerfile_sources(dockerfile):
            assert list(context.glob(source)), f"{name}: {dockerfile.name} copies {source}"
        built += 1
    assert built, "no service is built from this repository"


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
