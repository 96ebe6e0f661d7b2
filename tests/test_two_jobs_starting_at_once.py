"""Worker threads share the runtime's one transport: two jobs that start
sending at the same moment (two alerts' fan-outs) must find the same relay
pool, not build one each (each pool runs its own event loop, and a message
handed to the wrong one fails with "bound to a different event loop")."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import pytest

from mailflow.config import Settings
from mailflow.core import runtime as runtime_module
from mailflow.core.runtime import Runtime


class SlowPool:
    """A relay pool that takes a moment to build, as a real one does when
    it starts its loop: long enough for a second thread to arrive."""

    built: ClassVar[list[SlowPool]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.2)
        SlowPool.built.append(self)

    def close(self) -> None:
        pass


def test_two_threads_asking_for_the_transport_at_once_share_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    SlowPool.built = []
    monkeypatch.setattr(runtime_module, "SmtpRelayPool", SlowPool)
    runtime = Runtime(settings)
    start = threading.Barrier(2)
    got: list[object] = []

    def ask() -> None:
        start.wait()
        got.append(runtime.transport)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runtime.close()

    assert len(SlowPool.built) == 1
    assert got[0] is got[1]
