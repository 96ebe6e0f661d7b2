"""Running the `mailflow` command in the test's own process, as a person
would from a shell, with only the settings the test gives it."""

from __future__ import annotations

import os

from click.testing import CliRunner, Result

from mailflow.cli.main import cli
from mailflow.config import Settings

SECRET_KEY = "a-cli-test-secret-key-0123456789-abcdefghijklmnop"


def mailflow(*args: str, database_url: str | None = None, **environ: str | None) -> Result:
    """Run `mailflow ARGS`.  An exception that escapes the command fails the
    test (a person would have seen a traceback).  A variable given as None
    is unset."""
    # Only the test's settings: none from the shell that started pytest.
    env: dict[str, str | None] = {
        name: None
        for name in os.environ
        if name.startswith("MAILFLOW_") and not name.startswith("MAILFLOW_TEST_")
    }
    env.update({"MAILFLOW_SECRET_KEY": SECRET_KEY, **environ})
    if database_url is not None:
        env["MAILFLOW_DATABASE_URL"] = database_url
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def mailflow_with(settings: Settings, *args: str) -> Result:
    """Run `mailflow ARGS` on the test's database, with its secret key, and
    with links and addresses pointing where the test's own app and mail
    domain are."""
    return mailflow(
        *args,
        database_url=settings.database_url,
        MAILFLOW_SECRET_KEY=settings.secret_key,
        MAILFLOW_BASE_URL=settings.base_url,
        MAILFLOW_MAIL_DOMAIN=settings.mail_domain,
    )


def one_error_line(result: Result) -> str:
    """The single `mailflow: ...` line a failed command printed on stderr,
    with nothing on stdout."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mailflow: "), result.stderr
    assert result.stdout == ""
    return lines[0].removeprefix("mailflow: ")
