"""The ``mailflow`` command's entry point (``pyproject.toml`` names
``main``); the group and its commands are built in ``mailflow.cli.app``."""

from __future__ import annotations

from mailflow.cli.app import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="mailflow")
