"""The `mailflow imap` command."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import click

from mailflow.cli.context import Context, fail
from mailflow.cli.metrics_server import MetricsServer, metrics_listen_option, metrics_server
from mailflow.cli.running import run_until_stopped, warn_unless_commits_are_durable
from mailflow.config import ConfigError

if TYPE_CHECKING:
    from mailflow.gateway.imap import ImapPoller


@click.command("imap")
@click.option(
    "--once",
    is_flag=True,
    help="Do one pass over the mailbox and exit (non-zero if it failed), "
    "e.g. from cron, instead of polling until stopped.",
)
@metrics_listen_option
@click.pass_obj
def imap(ctx: Context, once: bool, metrics_listen: tuple[str, int] | None) -> None:
    """Poll an IMAP mailbox for replies: store each new message, then
    mark it as MAILFLOW_IMAP_AFTER says.

    The mailbox is MAILFLOW_IMAP_URL,
    imap://user:password@host:port/MAILBOX (imaps:// for TLS; the user
    name and password URL-encoded; MAILBOX defaults to INBOX).

    Every message is stored, raw, before anything is done to it on the
    server; then, by MAILFLOW_IMAP_AFTER, it is marked \\Seen ("seen",
    the default), moved ("move:FOLDER", creating FOLDER if needed) or
    deleted ("delete").  The poller remembers the mailbox's UIDVALIDITY
    and the last UID it stored, so a restart never stores a message
    twice.

    Between passes it waits for new mail with IMAP IDLE when the server
    offers it, else every MAILFLOW_IMAP_POLL_SECONDS.  Connection errors
    are logged and retried with a growing pause (up to a minute).
    Stop it with SIGTERM or Ctrl-C."""
    # Imported here: only the commands that poll pay for loading
    # imapclient.
    from mailflow.gateway.imap import ImapPoller

    if not ctx.settings.imap_url:
        fail(
            "configuration: MAILFLOW_IMAP_URL is not set; set it to "
            "imap://user:password@host:port/MAILBOX (imaps:// for TLS)",
            code=2,
        )
    ctx.require_schema()
    warn_unless_commits_are_durable(ctx.runtime.engine)
    try:
        poller = ImapPoller(ctx.runtime)
    except ConfigError as exc:
        fail(f"configuration: {exc}", code=2)

    if once:
        poll_once(poller)
    else:
        # The poller stores into the database only; the broker is the worker's.
        health = metrics_server(ctx.runtime, metrics_listen, broker=False, queue=False)
        poll_until_stopped(poller, health)


def poll_once(poller: ImapPoller) -> None:
    try:
        result = poller.poll_once()
    except Exception as exc:  # every failure ends in one clear line
        fail(poller.describe_failure(exc))
    finally:
        poller.close()
    click.echo(
        f"{poller.key}: {result.stored} new messages stored, "
        f"{result.finished} finished ({poller.after.describe()})"
    )


def poll_until_stopped(poller: ImapPoller, health: MetricsServer | None) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,), name="imap-poller")

    def start_polling() -> None:
        thread.start()
        if health is not None:
            health.start()

    def stop_polling() -> None:
        if health is not None:
            health.stop()
        stop.set()
        thread.join()

    run_until_stopped(start_polling, stop_polling)
