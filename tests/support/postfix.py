"""A real Postfix instance for tests, set up as deploy/postfix/ says.

`PostfixInstance` makes a temporary folder with its own configuration,
queue and data directories, writes main.cf from deploy/postfix/main.cf
(with the test's mail domain, LMTP port and folders put in) followed by the
settings that make it a private instance (loopback only, its own log
file, a test relay as the organisation's relayhost), renders
deploy/postfix/mailflow_transport the same way, and runs `postfix -c DIR
start` with an smtpd on a free loopback port::

    with PostfixInstance(domain="alerts.test", lmtp_port=8024, relay_port=2525) as postfix:
        smtplib.SMTP("127.0.0.1", postfix.port) ...

It is always stopped again (`postfix -c DIR stop`), even when the test
fails.  Postfix's daemons run as the `postfix` user, so the folder is
made outside pytest's private tmp_path and readable by it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.support.relay import free_port

DEPLOY_FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "postfix"
# What deploy/postfix/ says, to be replaced by the test's own values.
DEPLOYED_DOMAIN = "alerts.example.org"
DEPLOYED_LMTP = "lmtp:inet:127.0.0.1:8024"
DEPLOYED_CONFIG_DIR = "/etc/postfix/"
START_TIMEOUT = 30.0
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin"])

# Only the services a relay to LMTP needs; no chroot (the folders are not
# set up for one).  postlog writes maillog_file.
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

# After deploy/postfix/main.cf: what makes this a private instance.  Later
# lines win in main.cf.
INSTANCE_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
myhostname = mx.{domain}
mydomain = {domain}
myorigin = {domain}
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
smtpd_banner = $myhostname ESMTP test instance
"""


class PostfixError(RuntimeError):
    """Postfix could not be set up, started or stopped."""


def postfix_binary() -> str | None:
    """Path of the `postfix` command, or None when it is not installed."""
    return shutil.which("postfix", path=_SEARCH_PATH)


def render(text: str, *, domain: str, lmtp_port: int, config_dir: Path) -> str:
    return (
        text.replace(DEPLOYED_DOMAIN, domain)
        .replace(DEPLOYED_LMTP, f"lmtp:inet:127.0.0.1:{lmtp_port}")
        .replace(DEPLOYED_CONFIG_DIR, f"{config_dir}/")
    )


class PostfixInstance:
    """Postfix relaying the mail domain to mailflow's LMTP port."""

    def __init__(self, *, domain: str, lmtp_port: int, relay_port: int | None = None) -> None:
        binary = postfix_binary()
        if binary is None:
            raise PostfixError("postfix is not installed")
        self.binary = binary
        self.postmap = shutil.which("postmap", path=_SEARCH_PATH) or "postmap"
        self.domain = domain
        self.lmtp_port = lmtp_port
        # The organisation's relay, which Postfix sends outbound mail through.
        self.relay_port = relay_port
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mailflow-postfix-"))
        self.root.chmod(0o755)
        self.config_dir = self.root / "etc"
        self._started = False

    def __enter__(self) -> PostfixInstance:
        try:
            self._configure()
            self._run(self.binary, "-c", str(self.config_dir), "start")
            self._started = True
            self._wait_for_greeting()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop Postfix and remove its folder (safe to call twice)."""
        try:
            if self._started:
                self._started = False
                self._run(self.binary, "-c", str(self.config_dir), "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        """Postfix's own log (maillog_file), for a failing test's message."""
        try:
            return (self.root / "maillog").read_text(errors="replace")[-8000:]
        except OSError:
            return "(no maillog)"

    def _configure(self) -> None:
        self.config_dir.mkdir()
        for name in ("queue", "data"):
            (self.root / name).mkdir()
        shutil.chown(self.root / "data", "postfix")

        def rendered(name: str) -> str:
            text = (DEPLOY_FOLDER / name).read_text()
            return render(
                text, domain=self.domain, lmtp_port=self.lmtp_port, config_dir=self.config_dir
            )

        main_cf = (
            rendered("main.cf") + "\n" + INSTANCE_CF.format(root=self.root, domain=self.domain)
        )
        if self.relay_port is not None:
            main_cf += f"relayhost = [127.0.0.1]:{self.relay_port}\n"
        (self.config_dir / "main.cf").write_text(main_cf)
        (self.config_dir / "master.cf").write_text(
            MASTER_CF.format(listen=f"127.0.0.1:{self.port}")
        )
        transport = self.config_dir / "mailflow_transport"
        transport.write_text(rendered("mailflow_transport"))
        self._run(self.postmap, "-c", str(self.config_dir), f"hash:{transport}")

    def _run(self, *argv: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise PostfixError(
                f"{' '.join(argv)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n{self.log_text()}"
            )

    def _wait_for_greeting(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    if sock.recv(512).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.1)
        raise PostfixError(f"postfix did not answer on port {self.port}:\n{self.log_text()}")
