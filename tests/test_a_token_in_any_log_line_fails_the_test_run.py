"""The suite's own guard (tests/support/secrets_in_logs.py) can fail: a
test run in which any log line, a subprocess's log file or standard error
holds a signed link token or a TOTP secret ends failed, naming the test
and where, and never printing the token or the secret whole."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from mailflow.core.links import Purpose, TokenService
from tests.support.secrets_in_logs import SecretWatch, masked

REPOSITORY = Path(__file__).resolve().parents[1]

LEAKY_TESTS = """
import logging
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import click
import pyotp
from click.testing import CliRunner

from mailflow.core.links import Purpose, TokenService

OUT = Path(__file__).parent / "made.txt"


def sign() -> str:
    service = TokenService("k" * 40, Purpose.ANSWER, timedelta(days=1))
    token = service.sign({"u": 1})
    with OUT.open("a") as out:
        out.write(token + "\\n")
    return token


def test_one_that_logs_a_link(caplog):
    logging.getLogger("mailflow.leaky").warning("could not open /r/%s", sign())


def test_one_that_logs_a_secret():
    secret = pyotp.random_base32()
    with OUT.open("a") as out:
        out.write(secret + "\\n")
    logging.getLogger("mailflow.enrolling").error("secret=%s", secret)


def test_one_whose_subprocess_writes_a_link_to_stderr():
    print("GET /r/" + sign(), file=sys.stderr)


def test_one_whose_subprocess_writes_a_link_to_its_log_file(tmp_path):
    (tmp_path / "web.log").write_text("error on /r/" + sign() + "\\n")


def test_one_whose_captured_subprocess_writes_a_link_to_stderr():
    code = "import sys; print('GET /r/' + sys.argv[1], file=sys.stderr)"
    subprocess.run([sys.executable, "-c", code, sign()], capture_output=True, check=True)


def test_one_whose_command_writes_a_link_to_stderr():
    @click.command()
    def leaky():
        click.echo("see /r/" + sign(), err=True)

    assert CliRunner().invoke(leaky).exit_code == 0


def test_one_that_only_prints_a_link_for_a_person_to_open():
    print("open https://mailflow.test/r/" + sign())


def test_one_that_logs_nothing_secret():
    sign()
    logging.getLogger("mailflow.quiet").warning("a link was opened")


def test_one_whose_child_signs_a_link_and_logs_it():
    # Signed in the child (as `python -m mailflow worker` would) with the
    # tests' key: this process never sees the token made.
    code = (
        "import sys; from datetime import timedelta; "
        "from mailflow.core.links import Purpose, TokenService; "
        "from tests.support.environment import SECRET_KEY; "
        "t = TokenService(SECRET_KEY, Purpose.CONFIRM, timedelta(days=1)).sign({'u': 2}); "
        "open(sys.argv[1], 'w').write(t); print('refused /c/' + t, file=sys.stderr)"
    )
    child = Path(__file__).parent / "child.txt"
    subprocess.run([sys.executable, "-c", code, str(child)], capture_output=True, check=True)
"""


@pytest.fixture
def leaky_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.RunResult:
    monkeypatch.setenv("PYTHONPATH", str(REPOSITORY))
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    return pytester.runpytest_subprocess(
        "-p", "tests.support.secrets_in_logs", "-p", "no:cacheprovider", "-q"
    )


def test_a_run_whose_tests_pass_fails_when_a_token_or_secret_was_logged(
    leaky_run: pytest.RunResult, pytester: pytest.Pytester
) -> None:
    output = leaky_run.stdout.str()

    leaky_run.assert_outcomes(passed=9)
    assert leaky_run.ret == pytest.ExitCode.TESTS_FAILED
    assert "secrets in logs" in output
    report = output.split("secrets in logs", 1)[1]
    assert "test_one_that_logs_a_link: link token" in report
    assert "the log of mailflow.leaky (WARNING)" in report
    assert "test_one_that_logs_a_secret: TOTP secret" in report
    assert "test_one_whose_subprocess_writes_a_link_to_stderr: link token" in report
    assert "in captured stderr call" in report
    assert "the file web.log a subprocess wrote" in report
    assert "test_one_whose_captured_subprocess_writes_a_link_to_stderr: link token" in report
    assert "in the standard error of a subprocess" in report
    assert "test_one_whose_command_writes_a_link_to_stderr: link token" in report
    assert "in the standard error of a command" in report
    assert "test_one_that_only_prints_a_link_for_a_person_to_open" not in report
    assert "test_one_that_logs_nothing_secret" not in report
    assert "test_one_whose_child_signs_a_link_and_logs_it: link token" in report
    child_token = (pytester.path / "child.txt").read_text()
    assert masked(child_token) in report and child_token not in output
    # In the order the tests made them: the first six were leaked.
    made = (pytester.path / "made.txt").read_text().split()
    assert len(made) == 8
    for value in made[:6]:
        assert masked(value) in report
    for value in made:
        assert value not in output


def test_a_run_that_logs_no_token_passes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPOSITORY))
    pytester.makepyfile(
        test_quiet="""
        import logging
        from datetime import timedelta
        from mailflow.core.links import Purpose, TokenService

        def test_quiet():
            TokenService("k" * 40, Purpose.ANSWER, timedelta(days=1)).sign({"u": 1})
            logging.getLogger("mailflow.quiet").warning("a link was opened")
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "tests.support.secrets_in_logs", "-p", "no:cacheprovider", "-q"
    )

    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    assert "secrets in logs" not in result.stdout.str()


def test_a_token_glued_to_dotted_text_is_still_found() -> None:
    watch = SecretWatch(tokens={"eyJ1IjoxfQ.aBcDeF.Sig_nature-123"})

    watch.check("at mailflow.core.eyJ1IjoxfQ.aBcDeF.Sig_nature-123.html", "a test line")
    watch.check("at eyJ1IjoxfQ.aBcDeF.other", "another line")

    assert [(f.where, f.kind) for f in watch.findings] == [("a test line", "link token")]


def test_a_token_signed_elsewhere_under_a_known_key_is_found() -> None:
    watch = SecretWatch()
    watch.know_signer("k" * 40, Purpose.ANSWER)
    elsewhere = TokenService("k" * 40, Purpose.ANSWER, timedelta(days=1)).sign({"u": 3})
    other_key = TokenService("x" * 40, Purpose.ANSWER, timedelta(days=1)).sign({"u": 3})

    watch.check(f"GET /r/{elsewhere} 400", "a known key")
    watch.check(f"GET /r/{other_key} 400", "an unknown key")
    watch.check("at mailflow.core.links 127.0.0.1 v1.2.3", "dotted words")

    assert [f.where for f in watch.findings] == ["a known key"]


def test_a_long_run_of_token_letters_is_scanned_in_linear_time() -> None:
    # 400,000 characters that look almost like a token: the pattern must not
    # backtrack over them (it once took about a minute at this length).
    SecretWatch().check("a" * 400_000 + "." + "b" * 10, "a long line")
