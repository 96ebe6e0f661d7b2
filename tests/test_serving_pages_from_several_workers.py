"""`mailflow web --workers 2`: two processes answer on the one port, a
link used through one worker stays used through the other (and when both
race for it), a worker that dies is replaced, and SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from mailflow.answers.statuses import AnswerStatus
from mailflow.core.pages.security import session_cookie_name
from tests.support.pages import Web, answer_counts, answer_link, user_id, verified_session_cookie
from tests.support.relay import free_port
from tests.support.waiting import wait_until

RAJ = "raj@riverside.example"


def start_web(web: Web, port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")},
        "MAILFLOW_DATABASE_URL": web.settings.database_url,
        "MAILFLOW_SECRET_KEY": web.settings.secret_key,
        "MAILFLOW_BASE_URL": web.settings.base_url,
        "MAILFLOW_MAIL_DOMAIN": web.settings.mail_domain,
        "MAILFLOW_MAILDIR": str(tmp_path / "maildir"),
    }
    with (tmp_path / "web.log").open("ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailflow",
                "web",
                "--workers",
                "2",
                "--listen",
                f"127.0.0.1:{port}",
            ],
            env=env,
            stdout=log,
            stderr=log,
            cwd=tmp_path,
        )


def workers_of(parent: subprocess.Popen[bytes]) -> list[int]:
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text()
    return sorted(int(pid) for pid in children.split())


def status_of(port: int, path: str, cookie: str = "", form: dict[str, str] | None = None) -> int:
    """The status of one request, each on a connection of its own."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers={"Cookie": cookie} if cookie else {}
    )
    opener = urllib.request.build_opener(NoRedirects)
    try:
        with opener.open(request, timeout=30) as response:
            status: int = response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        status = exc.code
    return status


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def serving(port: int) -> bool:
    try:
        return status_of(port, "/") == 200
    except OSError:
        return False


@contextmanager
def only(worker: int, workers: list[int]) -> Iterator[None]:
    """Only ``worker`` takes connections: the others are stopped (SIGSTOP)
    for the block, so they accept nothing from the shared socket."""
    paused = [pid for pid in workers if pid != worker]
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)


def test_two_workers_share_one_port_and_a_used_link_stays_used_in_either(
    web: Web, tmp_path: Path
) -> None:
    port = free_port()
    uid = user_id(web.db(), RAJ)
    cookie_name = session_cookie_name(web.settings)

    def verified_cookie(csrf: str) -> str:
        value = verified_session_cookie(web.settings, web.runtime.sessions, uid, csrf)
        return f"{cookie_name}={value}"

    def post(path: str, n: int) -> int:
        csrf = f"csrf-{n}"
        return status_of(port, path, verified_cookie(csrf), {"csrf_token": csrf, "note": "done"})

    server = start_web(web, port, tmp_path)
    try:
        wait_until(lambda: serving(port), timeout=60, what="mailflow web to serve")
        first, second = workers = workers_of(server)
        assert len(workers) == 2

        # Each worker on its own answers on the one port.
        for worker in workers:
            with only(worker, workers):
                assert status_of(port, "/") == 200

        # Used through the first worker, refused by the second.
        link = answer_link(web.db(), web.settings, RAJ, "RXA", AnswerStatus.COMPLETE)
        before = answer_counts(web.engine)
        with only(first, workers):
            assert post(link, 0) == 303
        with only(second, workers):
            assert post(link, 1) == 409
            assert status_of(port, link) == 200  # the page says it is already recorded
        assert answer_counts(web.engine)["answers"] == before["answers"] + 1

        # Sixteen attempts at once, spread over both workers: one records.
        raced = answer_link(web.db(), web.settings, RAJ, "RXA", AnswerStatus.IN_PROGRESS)
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = Counter(pool.map(lambda n: post(raced, n), range(16)))
        assert statuses == Counter({303: 1, 409: 15})
        assert answer_counts(web.engine)["answers"] == before["answers"] + 2

        # A worker that dies is replaced, and the port still answers.
        os.kill(first, signal.SIGKILL)
        wait_until(
            lambda: len(set(workers_of(server)) - {first}) == 2,
            timeout=30,
            what="a new worker in place of the killed one",
        )
        wait_until(lambda: serving(port), timeout=30, what="the port to answer again")
        remaining = workers_of(server)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    assert code == 0, (tmp_path / "web.log").read_text()
    for pid in remaining:
        assert not Path(f"/proc/{pid}").exists()
