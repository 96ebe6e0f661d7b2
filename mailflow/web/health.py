"""/healthz and /readyz on the web edge's own port, for a load balancer
or an orchestrator, and the timing of every request by route.

/metrics is not served here: the web port faces the internet, and the
metrics describe the service to whoever asks.  `mailflow web
--metrics-listen` (or MAILFLOW_METRICS_ADDR) serves them on an address
of their own (mailflow/cli/metrics_server.py)."""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailflow.core.health import shared_readiness
from mailflow.core.metrics import HTTP_REQUEST_DURATION
from mailflow.core.runtime import Runtime

NO_STORE = {"Cache-Control": "no-store"}
# Methods named in a label as they are; any other is "other" (the method
# is the client's to choose, and labels must stay few).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
# The label of a request no route took: its path is never a label.
UNMATCHED = "unmatched"


def routes(runtime: Runtime) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n", headers=NO_STORE)

    async def readyz(request: Request) -> Response:
        # The web pages need only the database: the broker is the worker's
        # (pages write their work to the outbox table, never to a queue).
        ready = await run_in_threadpool(shared_readiness, runtime.settings, broker=False)
        # Only which part: the driver's words are for the metrics address.
        return PlainTextResponse(
            ready.text(why=False), status_code=200 if ready.ready else 503, headers=NO_STORE
        )

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]


class RequestTimes:
    """Times each HTTP request into mailflow_http_request_duration_seconds,
    labelled with the route's template ("/r/{token}"), never the path: a
    path holds a link token, which must never reach a metric."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            HTTP_REQUEST_DURATION.labels(
                route=route_template(scope),
                method=scope["method"] if scope["method"] in METHODS else "other",
                status=str(status),
            ).observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """The template of the route Starlette's router matched (it leaves the
    route in the scope), else UNMATCHED."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED
