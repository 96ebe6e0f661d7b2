"""What a test run finds around it: whether it runs in CI, where the real
servers it needs are, what happens when one is missing, and the secret
key the tests' settings sign with.

A test that needs a component that is missing fails when CI=true and is
skipped (saying why) on a developer's machine."""

from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
SECRET_KEY = "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
POSTGRES_ADMIN_URL = os.environ.get(
    "MAILFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
RABBITMQ_URL = os.environ.get("MAILFLOW_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("MAILFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def missing_component(what: str) -> None:
    """Fail in CI, skip on a developer's machine."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} is not available here")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
