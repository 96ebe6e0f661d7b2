"""Text from untrusted mail made safe to store, log, print and export."""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the bidirectional overrides and isolates:
# written to a terminal they can move the cursor, retitle the window, ring
# the bell, or make text read in a different order than it is stored.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape
    (``\\x1b``), so it reads the same wherever it is shown."""
    return _UNSAFE.sub(_escaped, text)


# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: one starting like a formula is
    prefixed with a single quote (OWASP's advice on CSV injection)."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value
