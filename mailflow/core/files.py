"""Reading the files an operator hands the command line."""

from __future__ import annotations

from pathlib import Path

from mailflow.core.errors import InvalidInput


def read_text_file(path: Path, *, max_bytes: int | None = None) -> str:
    """The file's text, UTF-8 with or without a byte-order mark (as
    spreadsheets save CSV); an unreadable or non-UTF-8 file, or one longer
    than ``max_bytes``, is an InvalidInput naming the file."""
    try:
        with path.open("rb") as file:
            # One byte more than allowed is enough to know it is too long.
            raw = file.read() if max_bytes is None else file.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidInput(str(path), f"cannot read the file: {exc.strerror}") from exc
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidInput(str(path), f"longer than {max_bytes // 1024} KiB")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(str(path), f"not UTF-8 text (byte {exc.start})") from exc
