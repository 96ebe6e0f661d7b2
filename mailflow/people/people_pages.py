"""The people's pages, for the web app to serve: setting up an
authenticator app (``/enrol/TOKEN``), and asking for a new set-up link
from an answer or confirm page when a person has none yet."""

from __future__ import annotations

from starlette.routing import Route

from mailflow.core.links import ANSWER_LINK, CONFIRM_LINK, ENROL_LINK, SETUP_LINK_SUFFIX
from mailflow.core.pages.rendering import Pages
from mailflow.core.runtime import Runtime
from mailflow.people.enrolment import EnrolmentPages
from mailflow.people.setup_link import SetupLinkPages


def routes(runtime: Runtime, pages: Pages) -> list[Route]:
    enrolment = EnrolmentPages(runtime, pages)
    setup_links = SetupLinkPages(runtime, pages)
    return [
        Route(
            ANSWER_LINK.route + SETUP_LINK_SUFFIX, setup_links.from_answer_link, methods=["POST"]
        ),
        Route(
            CONFIRM_LINK.route + SETUP_LINK_SUFFIX, setup_links.from_confirm_link, methods=["POST"]
        ),
        Route(ENROL_LINK.route, enrolment.enrol, methods=["GET", "POST"]),
    ]
