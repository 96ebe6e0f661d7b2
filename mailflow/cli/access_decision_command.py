"""`mailflow access approve|deny ID [--reason TEXT]`: the service desk
decides a request (one sent to it because its organisation has no active
administrator, or any other), audited as the operator."""

from __future__ import annotations

import click

from mailflow.access.deciding import AlreadyDecided, Decider
from mailflow.access.decision_outcome import commit_decision
from mailflow.cli.context import Context, actor_name, fail, pass_context, reported_errors
from mailflow.core.errors import NotAllowed


def _decide(ctx: Context, request_id: int, *, approve: bool, reason: str) -> None:
    with reported_errors():
        try:
            with ctx.transaction() as session:
                decision = commit_decision(
                    session,
                    ctx.settings,
                    request_id=request_id,
                    decider=Decider(operator=actor_name()),
                    approve=approve,
                    reason=reason,
                    via="cli",
                    now=ctx.runtime.clock(),
                )
                state = decision.request.state.value
        except AlreadyDecided as exc:
            when = f" on {exc.decided_at:%Y-%m-%d %H:%M} UTC" if exc.decided_at else ""
            fail(
                f"access request {request_id} was already {exc.state.value} "
                f"by {exc.decided_by}{when} (nothing was written)"
            )
        except NotAllowed as exc:
            fail(f"access request {request_id}: {exc} (nothing was written)")
    click.echo(f"access request {request_id} {state}; the requester and administrators are told")


@click.command("approve")
@click.argument("request_id", type=int)
@click.option("--reason", default="", help="A note for the person who asked.")
@pass_context
def access_approve(ctx: Context, request_id: int, reason: str) -> None:
    """Approve access request ID: the requester becomes a responder there."""
    _decide(ctx, request_id, approve=True, reason=reason)


@click.command("deny")
@click.argument("request_id", type=int)
@click.option("--reason", default="", help="Why, told to the person who asked.")
@pass_context
def access_deny(ctx: Context, request_id: int, reason: str) -> None:
    """Deny access request ID."""
    _decide(ctx, request_id, approve=False, reason=reason)
