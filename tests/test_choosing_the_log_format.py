"""An operator chooses how mailflow writes its log: readable text (the
default) or one JSON object a line (MAILFLOW_LOG_FORMAT=json) for a log
collector, in every process of an edge, uvicorn's lines included."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mailflow.config import ConfigError, Settings, load_settings
from tests.support.cli import mailflow, one_error_line
from tests.support.environment import SECRET_KEY
from tests.support.relay import free_port
from tests.support.waiting import wait_until


def test_a_log_format_other_than_text_or_json_is_refused_by_name() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILFLOW_SECRET_KEY": SECRET_KEY, "MAILFLOW_LOG_FORMAT": "yaml"})

    assert str(caught.value) == "MAILFLOW_LOG_FORMAT: expected text or json, not 'yaml'"


def test_the_format_is_text_unless_json_is_chosen_in_any_case() -> None:
    def chosen(**environ: str) -> str:
        return load_settings(environ={"MAILFLOW_SECRET_KEY": SECRET_KEY, **environ}).log_format

    assert chosen() == "text"
    assert chosen(MAILFLOW_LOG_FORMAT="") == "text"
    assert chosen(MAILFLOW_LOG_FORMAT=" JSON ") == "json"


def test_a_command_with_a_bad_log_format_stops_before_doing_anything() -> None:
    result = mailflow("config", MAILFLOW_LOG_FORMAT="xml")

    assert result.exit_code == 2
    assert one_error_line(result) == (
        "configuration: MAILFLOW_LOG_FORMAT: expected text or json, not 'xml'"
    )


WEB = [sys.executable, "-m", "mailflow", "web", "--workers", "2"]


def answered(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
    except OSError:
        return 0


def test_every_line_of_the_web_server_and_its_workers_is_json_when_json_is_chosen(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")},
        "MAILFLOW_DATABASE_URL": settings.database_url,
        "MAILFLOW_SECRET_KEY": settings.secret_key,
        "MAILFLOW_LOG_FORMAT": "json",
    }
    log_path = tmp_path / "web.log"
    with log_path.open("ab") as log:
        server = subprocess.Popen(
            [*WEB, "--listen", f"127.0.0.1:{port}"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=tmp_path,
        )
    try:
        wait_until(lambda: answered(port, "/") == 200, timeout=60, what="the web server")
        assert answered(port, "/r/not-a-signed-link") == 400
        # Not HTTP at all: uvicorn's own logger says so.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            raw.recv(1024)
        deadline = time.monotonic() + 30
        while "uvicorn" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any(line["message"].startswith("web pages on http://127.0.0.1") for line in lines)
    refused = [line for line in lines if line.get("event") == "refused"]
    assert [(r["route"], r["status"], r["reason"]) for r in refused] == [
        ("/r/{token}", 400, "This link is not valid")
    ]
    assert "not-a-signed-link" not in log_path.read_text()
    assert any(
        line["logger"] == "uvicorn.error" and line["level"] == "WARNING" for line in lines
    ), lines
