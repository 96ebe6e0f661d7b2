"""Untrusted input is read in a child process, bounded in time: the bound
is for the call alone, never for the child's start, which on a loaded
machine can take seconds and must not fail good input."""

from __future__ import annotations

import pytest

from mailflow.core.bounded_calls import BoundedCalls, TookTooLong
from tests.support import slow_to_start


def start_the_fork_server() -> None:
    """Children come from a fork server, which imports the first caller's
    module once; a module it has not imported, each child imports itself
    as it starts."""
    first = BoundedCalls(dict, dict, seconds=30)
    try:
        assert first.call(started=True) == {"started": True}
    finally:
        first.close()


def test_a_child_slow_to_start_does_not_count_against_the_bound() -> None:
    start_the_fork_server()
    calls = BoundedCalls(slow_to_start.echo, str, seconds=0.5)
    try:
        # The child imports the module (1.5 s) before it is ready.
        assert calls.call(value="a reply") == "a reply"
        assert calls.call(value="another") == "another"
    finally:
        calls.close()


def test_a_call_over_its_bound_is_cut_off_and_the_next_call_gets_a_new_child() -> None:
    calls = BoundedCalls(slow_to_start.spin, str, seconds=0.5)
    try:
        with pytest.raises(TookTooLong, match=r"longer than 0\.5 s"):
            calls.call(seconds=5.0)
        assert calls.call(seconds=0.0) == "finished"
    finally:
        calls.close()
