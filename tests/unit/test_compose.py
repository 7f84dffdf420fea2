"""docker-compose.yml cannot run here (no Docker engine): validate it against the Compose
Specification's JSON schema (as vendored by check-jsonschema), check that every image it
builds finds what its Dockerfile copies, check the wiring between services, and check the
hardening of the stack and image: nothing but Redpoll is published, and Redpoll only on
loopback by default; no secret has a literal value or a default; the image is pinned, runs
as an unprivileged user and holds the whole project (redpoll.testing.PROJECT_PARTS)."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs installed (pyproject.toml)
import pytest
import yaml

from redpoll.clickhouse.client import parse_url
from redpoll.settings import load_settings
from redpoll.testing import PROJECT_PARTS
from tests.support.compose import (
    INTERPOLATION,
    OPTIONAL_EMPTY_REF,
    REQUIRED_REF,
    SECRET_NAME,
    MissingVariable,
    interpolate,
    interpolated,
    published_host_ips,
    service_env,
    strings,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

#: What the required variables of docker-compose.yml are set to where a test needs them set.
#: Deliberately URL-unsafe-free values: CLICKHOUSE_PASSWORD goes into a URL.
TEST_ENV = {"CLICKHOUSE_PASSWORD": "test-ch-password", "REDPOLL_ADMIN_TOKEN": "test-admin"}

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
    compose = interpolated(load_compose(), TEST_ENV)
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


# --- helpers: compose interpolation and Dockerfile instructions --------------------------


def load_compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def dockerfile_instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined and comment
    lines dropped (Docker drops them inside continuations too)."""
    lines = [
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    logical = "\n".join(lines).replace("\\\n", " ").splitlines()
    instructions = []
    for line in logical:
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_project_dir() -> str:
    """REDPOLL_PROJECT_DIR as the image sets it (ENV key=value syntax)."""
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                if key == "REDPOLL_PROJECT_DIR":
                    return value.rstrip("/")
    raise AssertionError("Dockerfile sets no ENV REDPOLL_PROJECT_DIR")


# --- compose: exposure ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clickhouse", "redpanda"])
def test_backing_services_publish_no_ports(name: str) -> None:
    service = load_compose()["services"][name]
    assert "ports" not in service, (
        f"{name} publishes {service['ports']}: it must be reachable only from the compose "
        "network (Redpoll talks to it by service name)"
    )


def test_redpanda_has_no_external_listener() -> None:
    command = load_compose()["services"]["redpanda"]["command"]
    words = " ".join(command if isinstance(command, list) else [command])
    assert "external://" not in words and "localhost" not in words, (
        f"redpanda listens/advertises outside the compose network: {words}"
    )


def test_every_published_port_binds_loopback_by_default() -> None:
    services = interpolated(load_compose(), TEST_ENV)["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"redpoll"}, f"only redpoll may publish ports: {sorted(published)}"
    for address in published_host_ips(published["redpoll"]):
        assert address in {"127.0.0.1", "::1"}, (
            f"redpoll's port binds {address or 'every interface'} by default; publish it as "
            '"${REDPOLL_PUBLISH:-127.0.0.1:8000}:8000" and put a TLS reverse proxy in front'
        )


def test_redpoll_publish_address_is_configurable() -> None:
    env = {**TEST_ENV, "REDPOLL_PUBLISH": "10.0.0.5:9000"}
    ports = interpolated(load_compose(), env)["services"]["redpoll"]["ports"]
    assert ports == ["10.0.0.5:9000:8000"], (
        f"REDPOLL_PUBLISH does not choose where redpoll is published: {ports}"
    )


# --- compose: secrets and access ---------------------------------------------------------


def test_no_literal_secret_in_compose() -> None:
    """Every secret-named variable is `${NAME:?...}` (required), `${NAME:-}` (optional, empty)
    or has no value (passed through); a password inside a URL is a required reference."""
    for name, service in load_compose()["services"].items():
        for key, value in service_env(service).items():
            if SECRET_NAME.search(key) and value is not None:
                assert REQUIRED_REF.fullmatch(value) or OPTIONAL_EMPTY_REF.fullmatch(value), (
                    f"{name}: {key} is {value!r}; use ${{{key}:?set {key} in .env}} or ${{{key}:-}}"
                )
            userinfo = re.search(r"://[^/@:]*:(?P<password>[^@]*)@", value or "")
            if userinfo:
                password = userinfo["password"]
                assert REQUIRED_REF.fullmatch(password), (
                    f"{name}: {key} embeds the password {password!r}; use a ${{VAR:?...}} reference"
                )


@pytest.mark.parametrize("variable", sorted(TEST_ENV))
def test_compose_refuses_to_start_without_a_required_secret(variable: str) -> None:
    """Unset or empty, a required secret stops `docker compose` (no fallback value)."""
    for missing in ({}, {variable: ""}):
        env = {**{k: v for k, v in TEST_ENV.items() if k != variable}, **missing}
        try:
            interpolated(load_compose(), env)
        except MissingVariable as exc:
            assert str(exc).startswith(f"{variable}:"), exc
        else:
            pytest.fail(
                f"compose starts with {variable}={missing.get(variable)!r}: reference it as "
                f"${{{variable}:?set {variable} in .env (see .env.example)}}"
            )


def test_redpoll_has_an_admin_token_and_auth_stays_on(tmp_path: Path) -> None:
    env = service_env(load_compose()["services"]["redpoll"])
    assert "REDPOLL_ADMIN_TOKEN" in env, "redpoll needs REDPOLL_ADMIN_TOKEN for automation"
    # whatever compose sets, the app's own parsing (redpoll.settings) must keep auth on;
    # tmp_path as project dir so no redpoll.toml is read
    resolved = {k: interpolate(v, TEST_ENV) for k, v in env.items() if v is not None}
    settings = load_settings(environ={**resolved, "REDPOLL_PROJECT_DIR": str(tmp_path)})
    assert settings.auth, f"REDPOLL_AUTH={env.get('REDPOLL_AUTH')!r} turns token checks off"
    assert settings.admin_token == TEST_ENV["REDPOLL_ADMIN_TOKEN"]
    for keyword, rest in dockerfile_instructions():
        assert not (keyword == "ENV" and "REDPOLL_AUTH" in rest), f"Dockerfile sets {rest}"


def test_redpoll_cors_origins_is_not_forced() -> None:
    """An empty REDPOLL_CORS_ORIGINS means "no cross-origin calls" (redpoll.settings), so
    compose must not default it to empty: it passes it through or leaves it out."""
    env = service_env(load_compose()["services"]["redpoll"])
    value = env.get("REDPOLL_CORS_ORIGINS")
    assert value is None, f"REDPOLL_CORS_ORIGINS is forced to {value!r}"


def test_clickhouse_sql_access_management_is_off() -> None:
    env = service_env(load_compose()["services"]["clickhouse"])
    value = env.get("CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT")
    assert value in {None, "0"}, (
        f"CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT={value!r}: Redpoll creates no users or grants"
    )


def test_redpoll_healthcheck_needs_no_token() -> None:
    test = load_compose()["services"]["redpoll"]["healthcheck"]["test"]
    assert "/v0/health" in " ".join(test), f"healthcheck should hit /v0/health: {test}"


def test_env_example_lists_every_variable_compose_reads() -> None:
    assert ENV_EXAMPLE.is_file(), ".env.example documents the variables of docker-compose.yml"
    example = ENV_EXAMPLE.read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    compose_text = COMPOSE.read_text()
    referenced = {
        m["name"] or m["bare"]
        for value in strings(load_compose())
        for m in INTERPOLATION.finditer(value)
        if not m["escaped"]
    }
    passed_through = {
        key
        for service in load_compose()["services"].values()
        for key, value in service_env(service).items()
        if value is None
    }
    missing = (referenced | passed_through) - documented
    assert not missing, f".env.example does not document {sorted(missing)}"
    # the example's placeholders must never become defaults of the compose file
    for key, value in re.findall(r"^([A-Z][A-Z0-9_]*)=(\S+)", example, re.MULTILINE):
        if SECRET_NAME.search(key):
            assert value not in compose_text, f"compose contains the placeholder of {key}"


# --- Dockerfile ---------------------------------------------------------------------------


def test_base_image_is_pinned_to_a_patch_version() -> None:
    images = [rest.split()[0] for keyword, rest in dockerfile_instructions() if keyword == "FROM"]
    assert images, "Dockerfile has no FROM"
    for image in images:
        assert re.fullmatch(r"python:3\.\d+\.\d+[-\w.]*(@sha256:[0-9a-f]{64})?", image), (
            f"FROM {image}: pin a full version such as python:3.11.11-slim-bookworm"
        )


def test_image_runs_as_an_unprivileged_user() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert "USER" in keywords, "Dockerfile has no USER: the server would run as root"
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    user = instructions[last_user][1].split(":")[0]
    assert user not in {"root", "0"}, f"USER {instructions[last_user][1]} is root"
    last_run = max(i for i, keyword in enumerate(keywords) if keyword == "RUN")
    assert last_user > last_run, "USER must come after the last RUN (installs run as root)"


def test_only_the_state_dir_is_writable_by_the_user() -> None:
    state_dir = f"{dockerfile_project_dir()}/.redpoll"
    runs = " && ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "RUN")
    targets = [
        words[-1]
        for command in re.split(r"&&|;|\|\|", runs)
        if (words := [w for w in shlex.split(command) if not w.startswith("-")])
        and words[0] == "chown"
    ]
    assert targets, f"Dockerfile never chowns the state dir {state_dir} to its user"
    assert set(targets) == {state_dir}, f"chown targets {targets}; only {state_dir} should be"


def test_image_holds_every_project_part_in_the_repository() -> None:
    """Every part of the project (redpoll.testing.PROJECT_PARTS) that exists here is copied
    to REDPOLL_PROJECT_DIR: a missing `kafka/` makes the Kafka consumer silently idle."""
    project_dir = dockerfile_project_dir()
    copies = {
        (words[-2].rstrip("/"), words[-1].rstrip("/"))
        for keyword, rest in dockerfile_instructions()
        if keyword == "COPY" and len(words := shlex.split(rest)) >= 2
    }
    present = [part for part in PROJECT_PARTS if (ROOT / part).exists()]
    assert "kafka" in present and "endpoints" in present
    missing = [part for part in present if (part, f"{project_dir}/{part}") not in copies]
    assert not missing, f"Dockerfile does not COPY {missing} to {project_dir}"


def test_dockerignore_keeps_local_state_out_and_project_in() -> None:
    path = ROOT / ".dockerignore"
    assert path.is_file(), "no .dockerignore: .venv, .git and .redpoll would be sent to the build"
    patterns = [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".venv", ".git", ".redpoll", ".env"):
        assert needed in patterns, f".dockerignore does not exclude {needed}"
    excluded = [p for p in patterns if not p.startswith("!")]
    for source in dockerfile_sources(DOCKERFILE):
        hits = [p for p in excluded if fnmatch.fnmatch(source, p.strip("/"))]
        assert not hits, f".dockerignore excludes {source}, which the Dockerfile copies: {hits}"
    sub = ROOT / "endpoints" / "tests"
    if sub.is_dir():
        hits = [p for p in excluded if fnmatch.fnmatch("endpoints/tests", p.strip("/"))]
        assert not hits, f".dockerignore excludes endpoints/tests: {hits}"
