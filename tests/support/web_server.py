"""The web app served for real (uvicorn on a loopback port, in a thread)
for the tests that drive it with a browser."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from mailflow.core.runtime import Runtime
from mailflow.web import create_app
from tests.support.waiting import wait_until


@contextmanager
def web_server(runtime: Runtime, port: int) -> Iterator[None]:
    """Serving on 127.0.0.1:``port`` for the block; the runtime stays the
    caller's to close."""
    server = uvicorn.Server(
        # log_config=None: uvicorn's records go through the root logger, as
        # `mailflow web` sends them, so the suite's log checks see them.
        uvicorn.Config(
            create_app(runtime), host="127.0.0.1", port=port, log_level="warning", log_config=None
        )
    )
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=10, what="the web server to start")
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
