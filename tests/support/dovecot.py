"""A real Dovecot IMAP server for tests.

`DovecotServer` writes a configuration of its own into a temporary folder,
runs `dovecot -F -c CONFIG` on a free loopback port (IMAP only, no TLS,
plain-text logins allowed) and removes everything again when it stops::

    with DovecotServer() as server:
        server.add_user("alice", "secret")
        uid = server.append("alice", "secret", b"Subject: hi\\r\\n\\r\\nhello\\r\\n")
        server.url("alice", "secret")  # imap://alice:secret@127.0.0.1:PORT/INBOX

Each user has a passwd-file of their own (`passwd.d/<user>`, `{PLAIN}`
password). Dovecot looks at a passwd-file at most once a second, so one
shared file would make a user added straight after another user's login
unknown for up to a second; a new file per user is read on first use.

Run as root it uses the Debian users `dovecot` and `dovenull` as a normal
installation does; run as anyone else it runs every process as that user,
without chroots.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
# Dovecot usually lives in sbin, which is not on every user's PATH.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"]
)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")
_UIDVALIDITY_RE = re.compile(rb"UIDVALIDITY (\d+)")


class DovecotError(RuntimeError):
    """Dovecot could not be started, stopped or driven."""


def dovecot_binary() -> str | None:
    """Path of the `dovecot` binary, or None when it is not installed."""
    return shutil.which("dovecot", path=_SEARCH_PATH)


def dovecot_version() -> str:
    binary = dovecot_binary()
    if binary is None:
        raise DovecotError("dovecot is not installed")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class _Identity:
    """Who Dovecot's processes run as and who owns the mail."""

    login_user: str
    internal_user: str
    internal_group: str
    mail_user: str
    mail_group: str
    privileged: bool

    @classmethod
    def current(cls) -> _Identity:
        if os.geteuid() == 0:
            for name in ("dovecot", "dovenull"):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    raise DovecotError(
                        f"system user {name!r} is missing (it comes with the dovecot package)"
                    ) from None
            return cls("dovenull", "dovecot", "dovecot", "dovecot", "dovecot", True)
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        return cls(user, user, group, user, group, False)


class DovecotServer:
    """A Dovecot IMAP server on a loopback port, in a temporary folder."""

    def __init__(self, *, port: int | None = None) -> None:
        binary = dovecot_binary()
        if binary is None:
            raise DovecotError("dovecot is not installed")
        self.binary = binary
        self.doveadm = shutil.which("doveadm", path=_SEARCH_PATH) or "doveadm"
        self.host = HOST
        self._fixed_port = port
        self.port = port or 0
        self.identity = _Identity.current()
        self.root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._users: dict[str, str] = {}

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Make the temporary folder and start Dovecot in it."""
        if self.root is not None:
            raise DovecotError("already started")
        self.root = Path(tempfile.mkdtemp(prefix="mailflow-dovecot-"))
        try:
            self._prepare_root()
            # Another process may take the free port before Dovecot binds it.
            attempts = 1 if self._fixed_port else 3
            for attempt in range(attempts):
                self.port = self._fixed_port or free_port()
                self._write_config()
                try:
                    self._launch()
                    return
                except DovecotError:
                    if attempt + 1 < attempts and "Address already in use" in self.log_text():
                        continue
                    raise
        except BaseException:
            self.close()
            raise

    def restart(self) -> None:
        """Stop and start Dovecot again on the same port; mail and users stay."""
        if self.root is None:
            raise DovecotError("not started")
        self._stop_process()
        self._launch()

    def close(self) -> None:
        """Stop Dovecot and remove the temporary folder (safe to call twice)."""
        try:
            self._stop_process()
        finally:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None
                self._users.clear()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # ---------------------------------------------------------------- paths

    def _path(self, *parts: str) -> Path:
        if self.root is None:
            raise DovecotError("not started")
        return self.root.joinpath(*parts)

    @property
    def config_path(self) -> Path:
        return self._path("dovecot.conf")

    @property
    def log_path(self) -> Path:
        return self._path("dovecot.log")

    @property
    def mail_root(self) -> Path:
        return self._path("mail")

    def log_text(self, limit: int = 8000) -> str:
        """The end of Dovecot's log and of anything it printed itself."""
        parts = []
        for name in ("dovecot.log", "dovecot.out"):
            path = self._path(name)
            if path.exists():
                text = path.read_text(errors="replace")[-limit:]
                if text.strip():
                    parts.append(f"--- {name}\n{text}")
        return "\n".join(parts) or "(Dovecot logged nothing)"

    # ------------------------------------------------------------ set-up

    def _prepare_root(self) -> None:
        ident = self.identity
        assert self.root is not None
        # Dovecot's unprivileged processes must reach the folder.
        self.root.chmod(0o755)
        for name in ("mail", "passwd.d", "state"):
            self._path(name).mkdir()
        self._path("passwd.d").chmod(0o750)
        self._path("mail").chmod(0o700)
        if ident.privileged:
            # The auth process (internal user) reads the passwd files; the
            # imap processes (mail user) write the mail.
            shutil.chown(self._path("passwd.d"), "root", ident.internal_group)
            shutil.chown(self._path("mail"), ident.mail_user, ident.mail_group)

    def _write_config(self) -> None:
        ident = self.identity
        root = self._path()
        chroot_off = ""
        if not ident.privileged:
            # chroot needs root.
            chroot_off = "".join(
                f"service {name} {{\n  chroot =\n}}\n"
                for name in ("anvil", "imap-login", "imap-urlauth-login", "ipc", "old-stats")
            )
        config = f"""\
# Written by tests/support/dovecot.py for one test run.
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
listen = {HOST}
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
# Tests log in with wrong passwords on purpose: no delay after a failure
# (and no auth penalty: see service anvil below).
auth_failure_delay = 0
first_valid_uid = 1
default_login_user = {ident.login_user}
default_internal_user = {ident.internal_user}
default_internal_group = {ident.internal_group}
mail_location = maildir:{root}/mail/%u
mail_fsync = never
# IDLE learns of new mail through inotify, or else by looking this often.
mailbox_idle_check_interval = 1 secs

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd.d/%u
}}
userdb {{
  driver = static
  args = uid={ident.mail_user} gid={ident.mail_group} home={root}/mail/%u
}}

# IMAP on the chosen port and no other network listener.
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
# Without this socket the auth process keeps no per-address penalty, which
# would otherwise hold every login from 127.0.0.1 for seconds after a failure.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
{chroot_off}"""
        self.config_path.write_text(config)
        self.config_path.chmod(0o644)

    def _launch(self) -> None:
        out_path = self._path("dovecot.out")
        with out_path.open("ab") as out:
            # A session of its own: Ctrl-C in the terminal reaches pytest,
            # which stops Dovecot in its teardown, and stopping can signal
            # the whole process group.
            self._process = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_for_greeting()
        except BaseException:
            self._stop_process()
            raise

    def _wait_for_greeting(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DovecotError(
                    f"dovecot exited with status {self._process.returncode} while starting"
                    f"\n{self.log_text()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as sock:
                    greeting = sock.makefile("rb").readline()
                if greeting.startswith(b"* OK"):
                    return
                last_error = DovecotError(f"unexpected greeting {greeting!r}")
            except OSError as error:
                last_error = error
            time.sleep(0.05)
        raise DovecotError(
            f"dovecot did not answer on {self.host}:{self.port} within {START_TIMEOUT}s"
            f" ({last_error})\n{self.log_text()}"
        )

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        pgid = process.pid
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        # The master stops its children as it exits; make sure none is left
        # behind holding the port or writing into the folder.
        deadline = time.monotonic() + STOP_TIMEOUT
        while _group_alive(pgid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                deadline = time.monotonic() + STOP_TIMEOUT
            time.sleep(0.02)

    # ---------------------------------------------------------------- users

    def add_user(self, name: str, password: str) -> None:
        """Create (or change the password of) a user that can log in."""
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"unusable IMAP user name {name!r}")
        if any(c in password for c in ":\r\n\0"):
            raise ValueError("the password cannot hold ':', NUL or line breaks")
        path = self._path("passwd.d", name)
        changed = name in self._users and self._users[name] != password
        previous_mtime = path.stat().st_mtime if path.exists() else None
        temp = path.with_name(f".{name}.tmp")
        temp.write_text(f"{name}:{{PLAIN}}{password}::::::\n")
        temp.chmod(0o640)
        if self.identity.privileged:
            shutil.chown(temp, "root", self.identity.internal_group)
        os.replace(temp, path)
        self._users[name] = password
        if changed:
            # Dovecot notices a change by mtime or size, at most once a
            # second: give the file a new mtime and let that second pass.
            mtime = int(time.time())
            if previous_mtime is not None and int(previous_mtime) >= mtime:
                mtime = int(previous_mtime) + 1
            os.utime(path, (mtime, mtime))
            time.sleep(1.05)

    def url(self, user: str, password: str, mailbox: str = "INBOX") -> str:
        return (
            f"imap://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{self.host}:{self.port}/{quote(mailbox, safe='')}"
        )

    # ------------------------------------------------------- mailbox access

    @contextlib.contextmanager
    def imap(self, user: str, password: str) -> Iterator[imaplib.IMAP4]:
        """A logged-in stdlib IMAP connection, logged out afterwards."""
        conn = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            conn.login(user, password)
            yield conn
        finally:
            try:
                conn.logout()
            except (imaplib.IMAP4.error, OSError):
                conn.shutdown()

    def append(
        self,
        user: str,
        password: str,
        raw: bytes,
        mailbox: str = "INBOX",
        *,
        flags: str = "",
    ) -> int:
        """APPEND a message; returns its UID (from the APPENDUID reply)."""
        with self.imap(user, password) as conn:
            typ, data = conn.append(_quoted(mailbox), flags or None, None, raw)
        _check(typ, data, "APPEND")
        match = _APPENDUID_RE.search(b" ".join(d for d in data if isinstance(d, bytes)))
        if match is None:
            raise DovecotError(f"APPEND gave no APPENDUID: {data!r}")
        return int(match.group(2))

    def uids(self, user: str, password: str, mailbox: str = "INBOX") -> list[int]:
        with self.imap(user, password) as conn:
            _check(*conn.select(_quoted(mailbox), readonly=True), "EXAMINE")
            typ, data = conn.uid("SEARCH", "ALL")
        _check(typ, data, "UID SEARCH")
        return sorted(int(n) for n in (data[0] or b"").split())

    def flags(self, user: str, password: str, uid: int, mailbox: str = "INBOX") -> frozenset[str]:
        with self.imap(user, password) as conn:
            _check(*conn.select(_quoted(mailbox), readonly=True), "EXAMINE")
            typ, data = conn.uid("FETCH", str(uid), "(FLAGS)")
        _check(typ, data, "UID FETCH")
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if isinstance(line, bytes) and b"FLAGS" in line:
                return frozenset(f.decode() for f in imaplib.ParseFlags(line))
        raise DovecotError(f"no message with UID {uid} in {mailbox}")

    def uidvalidity(self, user: str, password: str, mailbox: str = "INBOX") -> int:
        with self.imap(user, password) as conn:
            typ, data = conn.status(_quoted(mailbox), "(UIDVALIDITY)")
        _check(typ, data, "STATUS")
        match = _UIDVALIDITY_RE.search(data[0] if isinstance(data[0], bytes) else b"")
        if match is None:
            raise DovecotError(f"STATUS gave no UIDVALIDITY: {data!r}")
        return int(match.group(1))

    def change_uidvalidity(
        self, user: str, password: str, mailbox: str = "INBOX", value: int | None = None
    ) -> int:
        """Give the mailbox a new UIDVALIDITY (one more than now unless told),
        as if it had been recreated; the messages stay. Returns the new value."""
        new = value if value is not None else self.uidvalidity(user, password, mailbox) + 1
        self.doveadm_run("mailbox", "update", "--uid-validity", str(new), "-u", user, mailbox)
        return new

    def doveadm_run(self, *args: str) -> str:
        """Run `doveadm -c CONFIG ARGS...` against this server."""
        result = subprocess.run(
            [self.doveadm, "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise DovecotError(
                f"doveadm {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.strip()}\n{self.log_text()}"
            )
        return result.stdout


@dataclass(frozen=True)
class DovecotAccount:
    """One user's view of a running server (what the `dovecot` fixture gives)."""

    server: DovecotServer
    user: str
    password: str

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, mailbox: str = "INBOX") -> str:
        return self.server.url(self.user, self.password, mailbox)

    def append(self, raw: bytes, mailbox: str = "INBOX", *, flags: str = "") -> int:
        return self.server.append(self.user, self.password, raw, mailbox, flags=flags)

    def uids(self, mailbox: str = "INBOX") -> list[int]:
        return self.server.uids(self.user, self.password, mailbox)

    def flags(self, uid: int, mailbox: str = "INBOX") -> frozenset[str]:
        return self.server.flags(self.user, self.password, uid, mailbox)

    def uidvalidity(self, mailbox: str = "INBOX") -> int:
        return self.server.uidvalidity(self.user, self.password, mailbox)

    def change_uidvalidity(self, mailbox: str = "INBOX", value: int | None = None) -> int:
        return self.server.change_uidvalidity(self.user, self.password, mailbox, value)


def _quoted(mailbox: str) -> str:
    """A mailbox name as an IMAP quoted string (imaplib sends it as given)."""
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check(typ: str, data: Sequence[object], what: str) -> None:
    if typ != "OK":
        raise DovecotError(f"{what} failed: {typ} {data!r}")


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running (zombies do not count:
    a container's init may never reap them)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and brackets.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
