"""A module that takes seconds to import, as mailflow's reading code can
in a new child process on a loaded machine."""

from __future__ import annotations

import time

START_SECONDS = 1.5
time.sleep(START_SECONDS)


def echo(value: str) -> str:
    return value


def spin(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"
