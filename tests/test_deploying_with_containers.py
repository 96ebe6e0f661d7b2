"""An operator runs mailflow with `docker compose up`: the Dockerfile passes
hadolint, docker-compose.yml is valid against the compose specification,
every edge is a service of its own with a health check, the emails go to
Mailpit unless a relay is set, and every secret comes from .env, which
.env.example documents.

There is no container engine on the test machines, so the image is not
built here: these are the checks that can run without one (hadolint and
check-jsonschema come with the dev extras, so they always run)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailflow.cli.main import cli
from mailflow.config import ENV_NAMES

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
EDGES = {
    "web": ["web"],
    "smtpd": ["smtpd"],
    "worker": ["worker"],
    "scheduler": ["scheduler"],
    "imap": ["imap"],
}
SECRET_NAME = re.compile(r"PASSWORD|PASS$|SECRET|TOKEN|_KEYS?$")
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?+][^}]*)?\}")
STATE = "/var/lib/mailflow"


def tool(name: str) -> str:
    """A checker installed with the dev extras, beside this Python."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is missing: pip install -e '.[dev]'"
    return found


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def dockerfile_lines(instruction: str) -> list[str]:
    return [
        line.split(None, 1)[1]
        for line in DOCKERFILE.read_text().splitlines()
        if line.split(None, 1)[:1] == [instruction]
    ]


# ---------------------------------------------------------------- the image


def test_the_dockerfile_passes_hadolint_without_a_finding() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--format", "json", "--no-fail", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=True,
    )
    findings = json.loads(result.stdout)
    assert findings == []


def test_the_image_runs_as_a_numeric_user_on_a_pinned_base_with_a_health_check() -> None:
    [base] = dockerfile_lines("FROM")
    name, _, tag = base.partition(":")
    assert name == "python" and re.fullmatch(r"3\.11\.\d+-slim-\w+", tag)
    [user] = dockerfile_lines("USER")
    assert user == "${MAILFLOW_UID}" and "ARG MAILFLOW_UID=10001" in DOCKERFILE.read_text()
    [health] = dockerfile_lines("HEALTHCHECK")
    assert "/healthz" in DOCKERFILE.read_text() and health.startswith("--interval")
    exposed = {port for line in dockerfile_lines("EXPOSE") for port in line.split()}
    assert {"8000", "8024", "8025"} <= exposed


def test_everything_the_image_writes_goes_to_its_volume() -> None:
    text = DOCKERFILE.read_text()
    assert dockerfile_lines("VOLUME") == [f'["{STATE}"]']
    # The settings whose defaults write files under the current folder.
    assert f"MAILFLOW_DATABASE_URL=sqlite:///{STATE}/mailflow.db" in text
    assert f"MAILFLOW_SECRET_KEY_FILE={STATE}/secret-key" in text
    assert f"MAILFLOW_MAILDIR={STATE}/maildir" in text
    assert "pip install --no-cache-dir ." in text


# ------------------------------------------------------------- the services


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_edge_is_a_service_running_its_own_command(compose: dict[str, Any]) -> None:
    found = services(compose)
    for name, command in EDGES.items():
        assert found[name]["command"][: len(command)] == command
        # The command exists: a renamed command would leave a dead service.
        assert cli.get_command(None, command[0]) is not None  # type: ignore[arg-type]
    assert found["migrate"]["command"] == ["db", "upgrade"]
    assert found["imap"]["profiles"] == ["imap"]
    for name in EDGES:
        assert found[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_every_edge_has_a_health_check(compose: dict[str, Any]) -> None:
    for name in EDGES:
        check = services(compose)[name]["healthcheck"]
        assert check["test"][0] == "CMD" and not check.get("disable"), name
    checks = {name: " ".join(services(compose)[name]["healthcheck"]["test"]) for name in EDGES}
    assert "127.0.0.1:8000/healthz" in checks["web"]
    assert "127.0.0.1:9100/healthz" in checks["smtpd"]
    for name in ("smtpd", "worker", "scheduler", "imap"):
        # Those with no pages serve their health on the metrics address.
        assert "127.0.0.1:9100/healthz" in checks[name], name
        assert services(compose)[name]["environment"]["MAILFLOW_METRICS_ADDR"] == "0.0.0.0:9100"


def test_every_service_from_the_image_replaces_or_disables_its_health_check(
    compose: dict[str, Any],
) -> None:
    # The image's own check asks :8000, where only the web pages listen: a
    # service that kept it would be marked unhealthy however well it ran.
    from_image = {
        name: service
        for name, service in services(compose).items()
        if service.get("image") == "mailflow:local"
    }
    assert set(EDGES) | {"migrate"} <= set(from_image)
    for name, service in from_image.items():
        check = service.get("healthcheck", {})
        assert check.get("disable") is True or check.get("test"), name
    assert services(compose)["migrate"]["healthcheck"] == {"disable": True}
    # The image says so, for `docker run IMAGE worker` outside compose.
    assert "Outside compose" in DOCKERFILE.read_text()


def test_web_and_the_lmtp_server_publish_their_ports(compose: dict[str, Any]) -> None:
    found = services(compose)
    assert found["web"]["ports"] == ["127.0.0.1:8000:8000"]
    assert found["smtpd"]["ports"] == ["127.0.0.1:8024:8024"]
    assert "--lmtp" in found["smtpd"]["command"]
    assert found["smtpd"]["environment"]["MAILFLOW_INBOUND_ADDR"] == "0.0.0.0:8024"
    assert found["mailpit"]["ports"] == ["127.0.0.1:8025:8025"]


def test_the_emails_go_to_mailpit_unless_a_relay_is_set(compose: dict[str, Any]) -> None:
    found = services(compose)
    assert found["mailpit"]["image"].startswith("axllent/mailpit:")
    for name in EDGES:
        relay = found[name]["environment"]["MAILFLOW_SMTP_RELAY"]
        assert relay == "${MAILFLOW_SMTP_RELAY:-smtp://mailpit:1025}", name


def test_every_setting_the_services_use_is_a_mailflow_setting(compose: dict[str, Any]) -> None:
    known = set(ENV_NAMES.values())
    for name, service in services(compose).items():
        used = {key for key in service.get("environment", {}) if key.startswith("MAILFLOW_")}
        assert used <= known, f"{name}: {used - known}"


# ------------------------------------------------------------------ secrets


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for key, value in (service.get("environment") or {}).items():
            text = str(value)
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", text), f"{name}: {key}"
            # A password inside a URL (user:password@host) is a variable too.
            for password in re.findall(r"://[^:/@]+:([^@]+)@", text):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", password), f"{name}: {key}"


def test_the_example_env_file_names_every_variable_the_compose_file_uses() -> None:
    used = set(VARIABLE.findall(COMPOSE.read_text()))
    assignments = [
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    named = {name for name, _ in assignments}
    assert used == named
    # Secrets are left empty, so compose refuses to start until they are set.
    secrets = {name: value for name, value in assignments if SECRET_NAME.search(name)}
    assert secrets == {"MAILFLOW_SECRET_KEYS": "", "POSTGRES_PASSWORD": "", "RABBITMQ_PASSWORD": ""}
