"""A pytest plugin: no link token and no TOTP secret in any log line of
the whole run (DESIGN.md invariant 9).

It records every token the code signs (``TokenService.sign``, wrapped for
the session) and every TOTP secret made (``pyotp.random_base32``), and
checks what the run logs against them.  Tokens signed in the subprocesses
a test starts (`python -m mailflow worker`, ...) are never seen here, so a
token-shaped string is also a leak when its signature verifies under a
key the tests use, for any link purpose (a TOTP secret made in a
subprocess is still only caught when made here too).  It checks every log record (a handler on
the root logger, so every logger that propagates, uvicorn's included),
what each test's captured standard error and log hold (which includes
the output of subprocesses that write to the inherited stderr), the
standard error a test captured from a subprocess (``communicate``, which
``subprocess.run`` uses) or from a command run in-process (``CliRunner``),
and the ``*.log`` files a test's subprocesses wrote into its ``tmp_path``.  At
the end of the session a run that logged one fails, naming the test, the
place and the first characters of what leaked (never the whole of it).

Cheap enough for the whole suite: a line is searched once with one
compiled pattern for token-shaped and secret-shaped strings, and only
those are looked up in the sets.  State lives in one object per session
(no pytest-xdist assumed: the suite runs in one process).  Registered
from tests/conftest.py."""

from __future__ import annotations

import logging
import re
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from click.testing import CliRunner, Result

from mailflow.core.links import Purpose, TokenService
from tests.support import cli, environment

# The keys the tests give the processes they start.
TEST_KEYS = (environment.SECRET_KEY, cli.SECRET_KEY)

# An itsdangerous token is three or more runs of URL-safe base64 joined by
# dots (payload, time, signature); a TOTP secret is 32 base32 letters.
# Possessive, and anchored at a run's start, so a long run of such
# characters is scanned once (the plain form backtracks quadratically).
TOKEN_RUN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]++(?:\.[A-Za-z0-9_-]++){2,}")
# A signature is an HMAC-SHA1 in URL-safe base64: 27 characters.  Shorter
# last parts (logger names, addresses, versions) are not worth checking.
SIGNATURE_LENGTH = 27
SECRET_RUN = re.compile(r"[A-Z2-7]{32,}")
SECRET_LENGTH = 32
# Loggers of the tests' own HTTP clients, which log the addresses they
# open (a link's token is in it): the test's side, not the service's.
CLIENT_LOGGERS = ("httpx", "httpcore", "urllib3")
LARGEST_LOG_FILE = 5 * 1024 * 1024
STASH_KEY = pytest.StashKey["SecretWatch"]()


@dataclass(frozen=True)
class Finding:
    test: str
    where: str
    kind: str
    shown: str


def masked(value: str) -> str:
    """Enough of a secret to find it again, not enough to use it."""
    return f"{value[:6]}... ({len(value)} characters)"


@dataclass
class SecretWatch:
    """What was signed or made, and what of it turned up where."""

    tokens: set[str] = field(default_factory=set)
    secrets: set[str] = field(default_factory=set)
    # Every (keys, purpose) a token service was made for in this process,
    # and with the tests' own keys, to recognise tokens signed elsewhere.
    signers: dict[tuple[tuple[str, ...], str], Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    test: str = "(outside any test)"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, text: str, where: str) -> None:
        """Record each known token or secret that ``text`` holds."""
        for kind, value in self.leaks(text):
            with self.lock:
                self.findings.append(Finding(self.test, where, kind, masked(value)))

    def leaks(self, text: str) -> Iterator[tuple[str, str]]:
        if "." in text:
            for run in TOKEN_RUN.findall(text):
                parts = run.split(".")
                # Any three consecutive parts, in case the token is glued
                # to dotted text on either side.
                for i in range(len(parts) - 2):
                    candidate = ".".join(parts[i : i + 3])
                    if candidate in self.tokens or self.signed_by_us(candidate):
                        yield "link token", candidate
        for run in SECRET_RUN.findall(text):
            for i in range(len(run) - SECRET_LENGTH + 1):
                candidate = run[i : i + SECRET_LENGTH]
                if candidate in self.secrets:
                    yield "TOTP secret", candidate

    def signed_by_us(self, candidate: str) -> bool:
        if len(candidate.rsplit(".", 1)[1]) < SIGNATURE_LENGTH:
            return False
        with self.lock:
            signers = list(self.signers.values())
        return any(signer.validate(candidate) for signer in signers)

    def know_signer(self, keys: str | Iterable[str], purpose: object) -> None:
        known = (keys,) if isinstance(keys, str) else tuple(keys)
        key = (known, str(purpose))
        if key not in self.signers:
            service = verifying_service(known, purpose)
            with self.lock:
                self.signers.setdefault(key, service._signer)

    def report(self) -> list[str]:
        lines = [f"{len(self.findings)} log line(s) held a link token or a TOTP secret:"]
        seen = set()
        for finding in self.findings:
            line = f"  {finding.test}: {finding.kind} {finding.shown} in {finding.where}"
            if line not in seen:
                seen.add(line)
                lines.append(line)
        return lines


class WatchingHandler(logging.Handler):
    """Checks every record that reaches the root logger."""

    def __init__(self, watch: SecretWatch) -> None:
        super().__init__(logging.NOTSET)
        self.watch = watch
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(CLIENT_LOGGERS):
            return
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + self._formatter.formatException(record.exc_info)
            elif record.exc_text:
                text += "\n" + record.exc_text
            # An event's fields are keys of their own, outside the message.
            text += " " + " ".join(str(v) for v in record.__dict__.values() if isinstance(v, str))
        except Exception:
            return
        self.watch.check(text, f"the log of {record.name} ({record.levelname})")


def _recording(watch: SecretWatch, into: Callable[[SecretWatch], set[str]], make: Any) -> Any:
    def recorded(*args: Any, **kwargs: Any) -> Any:
        value = make(*args, **kwargs)
        if isinstance(value, str):
            with watch.lock:
                into(watch).add(value)
        return value

    return recorded


# What the suite's subprocesses write their output to.
OUTPUT_FILES = (".log", ".out", ".err")


def log_files(folder: Path) -> Iterable[Path]:
    return (
        p
        for p in folder.rglob("*")
        if p.suffix in OUTPUT_FILES and p.is_file() and not p.is_symlink()
    )


def _text(output: object) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output if isinstance(output, str) else ""


def _checking_stderr(watch: SecretWatch) -> tuple[Any, Any]:
    """``Popen.communicate`` (which ``subprocess.run`` uses) and
    ``CliRunner.invoke``, each checking the standard error a test captured."""
    communicate, invoke = subprocess.Popen.communicate, CliRunner.invoke

    def communicating(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
        out, err = communicate(self, *args, **kwargs)
        watch.check(_text(err), "the standard error of a subprocess")
        return out, err

    def invoking(self: CliRunner, *args: Any, **kwargs: Any) -> Result:
        result = invoke(self, *args, **kwargs)
        watch.check(_text(result.stderr_bytes), "the standard error of a command")
        return result

    return communicating, invoking


def verifying_service(keys: tuple[str, ...], purpose: Any) -> TokenService:
    """A token service made without the watch noticing (it only verifies)."""
    service = TokenService.__new__(TokenService)
    ORIGINAL_INIT(service, keys, purpose, timedelta(days=1))
    return service


ORIGINAL_INIT = TokenService.__init__


def _noticing_signers(watch: SecretWatch) -> Any:
    def made(self: TokenService, secret_keys: Any, purpose: Any, *args: Any, **kw: Any) -> None:
        ORIGINAL_INIT(self, secret_keys, purpose, *args, **kw)
        watch.know_signer(secret_keys, purpose)

    return made


def pytest_configure(config: pytest.Config) -> None:
    watch = SecretWatch()
    config.stash[STASH_KEY] = watch
    handler = WatchingHandler(watch)
    logging.getLogger().addHandler(handler)
    # mailflow's events are INFO records: logged whatever ran before, so
    # every test's are checked (a command run in-process sets this too).
    mailflow_logger = logging.getLogger("mailflow")
    level_before = mailflow_logger.level
    mailflow_logger.setLevel(logging.INFO)
    for key in TEST_KEYS:
        for purpose in Purpose:
            watch.know_signer(key, purpose)
    originals = (
        TokenService.sign,
        pyotp.random_base32,
        subprocess.Popen.communicate,
        CliRunner.invoke,
    )
    TokenService.__init__ = _noticing_signers(watch)  # type: ignore[method-assign]
    TokenService.sign = _recording(watch, lambda w: w.tokens, originals[0])  # type: ignore[method-assign]
    pyotp.random_base32 = _recording(watch, lambda w: w.secrets, originals[1])
    subprocess.Popen.communicate, CliRunner.invoke = _checking_stderr(watch)  # type: ignore[method-assign]

    def undo() -> None:
        TokenService.__init__ = ORIGINAL_INIT  # type: ignore[method-assign]
        mailflow_logger.setLevel(level_before)
        TokenService.sign, pyotp.random_base32 = originals[:2]  # type: ignore[method-assign]
        subprocess.Popen.communicate, CliRunner.invoke = originals[2:]  # type: ignore[method-assign]
        logging.getLogger().removeHandler(handler)

    config.add_cleanup(undo)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    watch = item.config.stash[STASH_KEY]
    watch.test = item.nodeid
    try:
        return (yield)
    finally:
        watch.test = "(between tests)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report: pytest.TestReport = yield
    watch = item.config.stash[STASH_KEY]
    # Standard error (standard output is where commands print links on
    # purpose, as `mailflow mail show` does; the captured log is the
    # records the handler has already seen, and the test's HTTP client's).
    # (Sections pile up over setup, call and teardown: each is read once.)
    for title, text in report.sections:
        if "stderr" in title and title.endswith(report.when):
            watch.check(text, title.lower())
    if report.when == "teardown":
        folder = getattr(item, "funcargs", {}).get("tmp_path")
        if isinstance(folder, Path) and folder.is_dir():
            for path in log_files(folder):
                if path.stat().st_size <= LARGEST_LOG_FILE:
                    text = path.read_text(encoding="utf-8", errors="replace")
                    watch.check(text, f"the file {path.name} a subprocess wrote")
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    watch = session.config.stash[STASH_KEY]
    if watch.findings:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    watch = config.stash[STASH_KEY]
    if watch.findings:
        terminalreporter.section("secrets in logs", sep="=", red=True, bold=True)
        for line in watch.report():
            terminalreporter.write_line(line)
