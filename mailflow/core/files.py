"""Reading the files an operator hands the command line."""

from __future__ import annotations

from pathlib import Path

from mailflow.core.errors import InvalidInput


def read_text_file(path: Path) -> str:
    """The file's text, UTF-8 with or without a byte-order mark (as
    spreadsheets save CSV); an unreadable or non-UTF-8 file is an
    InvalidInput naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(str(path), f"cannot read the file: {exc.strerror}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(str(path), f"not UTF-8 text (byte {exc.start})") from exc
