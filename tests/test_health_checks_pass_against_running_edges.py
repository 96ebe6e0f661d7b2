"""The health checks docker-compose.yml and the image declare, run as a
container engine runs them, against real `mailflow web` and `mailflow
smtpd` processes started with the compose service's own command and
settings (on loopback ports of the test's choosing, there being no
container engine here).  A check that names the wrong port, path or
setting would leave a service unhealthy for ever."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cli import mailflow
from tests.support.environment import SECRET_KEY
from tests.support.machines import environment, running, start, wait_for_port
from tests.support.relay import free_port

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return loaded


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'mailflow.db'}"
    assert mailflow("db", "upgrade", database_url=url).exit_code == 0
    return url


def on_port(check: str, container_port: int, port: int) -> str:
    """The check's code with the container's port swapped for the test's."""
    swapped, count = re.subn(rf"127\.0\.0\.1:{container_port}/", f"127.0.0.1:{port}/", check)
    assert count == 1, check
    return swapped


def passes(code: str) -> bool:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    return done.returncode == 0


def compose_check(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    code: str = test[3]
    return code


def listen_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_the_web_services_check_passes_while_it_serves_and_fails_once_it_stops(
    services: dict[str, dict[str, Any]], database: str, tmp_path: Path
) -> None:
    web = services["web"]
    command = web["command"]
    container_port = listen_port(command[command.index("--listen") + 1])
    port = free_port()
    check = on_port(compose_check(web), container_port, port)
    # The image's own HEALTHCHECK (for `docker run` without compose) is the
    # same request on the same port.
    assert compose_check(web) in DOCKERFILE.read_text()

    env = environment({"MAILFLOW_DATABASE_URL": database, "MAILFLOW_SECRET_KEY": SECRET_KEY})
    args = [*command[: command.index("--listen")], "--listen", f"127.0.0.1:{port}"]
    with running([start("web", args, env, tmp_path)]) as (edge,):
        wait_for_port(edge, port)
        assert passes(check), edge.log
    assert not passes(check)


@pytest.mark.parametrize("name", ["smtpd", "scheduler"])
def test_a_services_check_passes_on_its_metrics_address_while_it_runs(
    services: dict[str, dict[str, Any]], database: str, tmp_path: Path, name: str
) -> None:
    """smtpd (the worker and the IMAP poller are checked the same way) and
    the scheduler, which serves no pages at all."""
    service = services[name]
    settings = service["environment"]
    container_port = listen_port(settings["MAILFLOW_METRICS_ADDR"])
    metrics_port = free_port()
    check = on_port(compose_check(service), container_port, metrics_port)

    env = environment(
        {
            "MAILFLOW_DATABASE_URL": database,
            "MAILFLOW_SECRET_KEY": SECRET_KEY,
            # The compose service's settings, on the test's loopback ports.
            "MAILFLOW_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            "MAILFLOW_INBOUND_ADDR": f"127.0.0.1:{free_port()}",
        }
    )
    with running([start(name, service["command"], env, tmp_path)]) as (edge,):
        wait_for_port(edge, metrics_port)
        assert passes(check), edge.log
    assert not passes(check)
