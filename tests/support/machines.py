"""`mailflow` edges run as subprocesses, as they would on machines of
their own: each with only its environment (the shared database and
broker), its own log file, and no state shared with the test but what
goes through PostgreSQL, the broker and the sockets.  And which of them
holds a given TCP connection, read from /proc (Linux)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Machine:
    """One `mailflow` process and the log it writes."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def environment(settings: dict[str, str]) -> dict[str, str]:
    """The test's own environment without any MAILFLOW_ setting from the
    shell that started pytest, and with ``settings`` on top."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("MAILFLOW_") or name.startswith("MAILFLOW_TEST_")
    }
    env.update(settings)
    return env


def start(name: str, args: list[str], env: dict[str, str], workdir: Path) -> Machine:
    """Start `python -m mailflow ARGS` in a directory of its own."""
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "mailflow.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailflow", *args],
            env=env,
            stdout=log,
            stderr=log,
            cwd=home,
        )
    return Machine(name, process, log_path)


def stop_all(machines: list[Machine], *, timeout: float = 30.0) -> dict[str, int | None]:
    """SIGTERM to each at once, as a service manager stops them; each
    one's exit code, or None for one that had not stopped in ``timeout``
    seconds (it is killed)."""
    for machine in machines:
        if machine.process.poll() is None:
            machine.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    codes: dict[str, int | None] = {}
    for machine in machines:
        try:
            codes[machine.name] = machine.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            machine.process.kill()
            machine.process.wait(timeout=10)
            codes[machine.name] = None
    return codes


@contextmanager
def running(machines: list[Machine]) -> Iterator[list[Machine]]:
    """Stop every machine on the way out, even when one failed to start."""
    try:
        yield machines
    finally:
        stop_all(machines)


def wait_for_port(machine: Machine, port: int, *, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and machine.process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{machine.name} did not listen on {port}:\n{machine.log}")


def connection_owner(local_port: int, machines: list[Machine]) -> str | None:
    """The name of the machine holding the open TCP socket whose local end
    is 127.0.0.1:``local_port``, or None when none does (any more)."""
    inode = _socket_inode(local_port)
    if inode is None:
        return None
    link = f"socket:[{inode}]"
    for machine in machines:
        fds = Path(f"/proc/{machine.process.pid}/fd")
        for fd in fds.iterdir():
            try:
                if os.readlink(fd) == link:
                    return machine.name
            except OSError:
                continue  # closed while we looked
    return None


def _socket_inode(local_port: int) -> str | None:
    # /proc/net/tcp: "sl local_address rem_address st ... uid timeout inode";
    # 0100007F is 127.0.0.1, written as the kernel stores it.
    wanted = f"0100007F:{local_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted:
            return fields[9]
    return None
