"""What a mailflow process writes to its log, captured in the test's own
process: the real formatter of MAILFLOW_LOG_FORMAT on a handler of the
root logger, with mailflow's loggers at INFO as the command line sets them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mailflow.core.logs import make_formatter


class CapturedLines:
    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    @property
    def lines(self) -> list[str]:
        return self._stream.getvalue().splitlines()

    def parsed(self) -> list[dict[str, Any]]:
        """Every line, each parsed as JSON (fails on a line that is not)."""
        return [json.loads(line) for line in self.lines]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.parsed() if line.get("event") == name]


@contextmanager
def captured_log(log_format: str) -> Iterator[CapturedLines]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(log_format))
    root, ours = logging.getLogger(), logging.getLogger("mailflow")
    level = ours.level
    ours.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield CapturedLines(stream)
    finally:
        root.removeHandler(handler)
        ours.setLevel(level)
