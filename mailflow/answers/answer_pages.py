"""The confirmation pages: ``/r/TOKEN`` (a status link from an alert email)
and ``/c/TOKEN`` (answers read from a reply), both through the one commit
flow, and ``/recorded``, the page after an answer is committed.  GET and
HEAD only show what would be recorded; POST commits it after the second
factor."""

from __future__ import annotations

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailflow.answers.reply_emails import describe_answer
from mailflow.answers.reply_pages import ReplyAnswersKind
from mailflow.answers.status_link import StatusLinkKind
from mailflow.core.links import ANSWER_LINK, CONFIRM_LINK
from mailflow.core.models import Alert, Answer, Organisation
from mailflow.core.pages.commit_flow import link_endpoint
from mailflow.core.pages.rendering import Pages
from mailflow.core.pages.security import session_user
from mailflow.core.runtime import Runtime


def routes(runtime: Runtime, pages: Pages) -> list[Route]:
    """The answers' pages, for the web app to serve."""
    status_link = link_endpoint(runtime, pages, StatusLinkKind(runtime, pages))
    reply_answers = link_endpoint(runtime, pages, ReplyAnswersKind(runtime, pages))
    answers = AnswerPages(runtime, pages)
    return [
        Route(ANSWER_LINK.route, status_link, methods=["GET", "POST"]),
        Route(CONFIRM_LINK.route, reply_answers, methods=["GET", "POST"]),
        Route("/recorded", answers.recorded, methods=["GET"]),
    ]


class AnswerPages:
    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        self.runtime = runtime
        self.pages = pages

    async def recorded(self, request: Request) -> Response:
        return await run_in_threadpool(self._recorded, request)

    # ---- /recorded

    def _recorded(self, request: Request) -> Response:
        ids = request.session.get("recorded")
        user_id = session_user(request)
        if not isinstance(ids, list) or user_id is None:
            return self.pages.problem(
                request,
                404,
                "Nothing to show",
                "There is no recent answer to show. Open a link from an alert email.",
            )
        with self.runtime.readers() as session:
            rows = session.execute(
                select(Answer, Organisation)
                .join(Organisation, Organisation.id == Answer.organisation_id)
                .where(Answer.id.in_([i for i in ids if isinstance(i, int)]))
                .where(Answer.user_id == user_id)
                .order_by(Organisation.code)
            ).all()
            if not rows:
                return self.pages.problem(
                    request, 404, "Nothing to show", "There is no recent answer to show."
                )
            alert = session.get_one(Alert, rows[0][0].alert_id)
            lines = [describe_answer(org, answer) for answer, org in rows]
            within = rows[0][0].within_deadline
        return self.pages.render(
            request,
            "recorded.html",
            {
                "title": "Answer recorded",
                "alert": alert,
                "lines": lines,
                "within_deadline": within,
            },
        )
