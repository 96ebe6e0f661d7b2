"""An operator runs each edge as a systemd service (deploy/systemd/): the
units pass `systemd-analyze verify` without a warning, each runs a
mailflow command that exists, under a hardened sandbox with its settings
from /etc/mailflow/mailflow.env, restarts on failure, and waits for the
schema upgrade; the LMTP server listens where the Postfix transport map
delivers.

`systemd-analyze verify` needs no running systemd; it checks the
ExecStart= binary exists, so the units are checked with this checkout's
`mailflow` put in.  Without systemd-analyze that check fails in CI and is
skipped elsewhere; the structural checks always run."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from mailflow.cli.main import cli
from tests.support.environment import missing_component

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNITS = DEPLOY / "systemd"
INSTALLED_COMMAND = "/opt/mailflow/bin/mailflow"
EDGES = {
    "mailflow-web.service": "web",
    "mailflow-smtpd.service": "smtpd",
    "mailflow-worker.service": "worker",
    "mailflow-scheduler.service": "scheduler",
    "mailflow-imap.service": "imap",
}
ALL_SERVICES = {**EDGES, "mailflow-migrate.service": "db"}
HARDENING = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "StateDirectory": "mailflow",
    "UMask": "0077",
    "EnvironmentFile": "/etc/mailflow/mailflow.env",
}


def read_unit(name: str) -> configparser.ConfigParser:
    # systemd allows a key twice (Wants= on two lines); so does this reader.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def command_of(name: str) -> list[str]:
    return shlex.split(read_unit(name)["Service"]["ExecStart"])


def test_the_units_pass_systemd_analyze_verify_without_a_warning(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing_component("systemd-analyze (Debian package systemd)")
    mailflow = Path(sys.executable).parent / "mailflow"
    assert mailflow.exists(), "mailflow is not installed in this environment"
    for unit in UNITS.iterdir():
        if unit.name.startswith("mailflow"):
            text = unit.read_text().replace(INSTALLED_COMMAND, str(mailflow))
            (tmp_path / unit.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.iterdir() if p.suffix in (".service", ".target"))
    result = subprocess.run(
        [analyze, "verify", *units], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    # Unknown keys and bad values are only warned about: any output fails.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_every_edge_runs_a_mailflow_command_that_exists() -> None:
    for unit, command in ALL_SERVICES.items():
        argv = command_of(unit)
        assert argv[:2] == [INSTALLED_COMMAND, command], unit
        assert cli.get_command(None, command) is not None  # type: ignore[arg-type]
    assert command_of("mailflow-migrate.service")[1:] == ["db", "upgrade"]


def test_every_service_is_sandboxed_and_reads_the_one_settings_file() -> None:
    for unit in ALL_SERVICES:
        service = read_unit(unit)["Service"]
        for key, value in HARDENING.items():
            assert service.get(key) == value, f"{unit}: {key}"


def test_the_edges_restart_on_failure_and_wait_for_the_schema() -> None:
    for unit in EDGES:
        parsed = read_unit(unit)
        assert parsed["Service"]["Restart"] == "on-failure", unit
        assert "mailflow-migrate.service" in parsed["Unit"]["Requires"].split(), unit
        assert "mailflow-migrate.service" in parsed["Unit"]["After"].split(), unit
        assert parsed["Install"]["WantedBy"] == "mailflow.target", unit
    migrate = read_unit("mailflow-migrate.service")["Service"]
    assert (migrate["Type"], migrate["RemainAfterExit"]) == ("oneshot", "yes")


def test_the_target_starts_every_edge_but_the_optional_imap_poller() -> None:
    text = (UNITS / "mailflow.target").read_text()
    wanted = {
        name
        for line in text.splitlines()
        if line.startswith("Wants=")
        for name in line.removeprefix("Wants=").split()
    }
    assert wanted == set(ALL_SERVICES) - {"mailflow-imap.service"}


def test_the_lmtp_server_listens_where_postfix_delivers() -> None:
    argv = command_of("mailflow-smtpd.service")
    assert "--lmtp" in argv
    listen = argv[argv.index("--listen") + 1]
    transport = (DEPLOY / "postfix" / "mailflow_transport").read_text()
    routes = {line.split()[1] for line in transport.splitlines() if line and line[0] != "#"}
    assert routes == {f"lmtp:inet:{listen}"}


def test_the_edges_that_listen_listen_on_loopback_only() -> None:
    """The web pages sit behind the TLS proxy, LMTP behind Postfix."""
    for unit in ("mailflow-web.service", "mailflow-smtpd.service"):
        argv = command_of(unit)
        assert argv[argv.index("--listen") + 1].startswith("127.0.0.1:"), unit
