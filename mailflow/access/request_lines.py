"""The one grammar of request lines: ``REQUEST RXB`` or
``REQUEST RXB, RXC: we are their outsourced IT provider``.

Codes are separated by commas and/or spaces; an optional reason follows a
colon.  Lines are read as the answers' reply lines are (case, bullets and
emphasis ignored, reading stops at a signature, a sign-off or a
disclaimer), from the top of what the person wrote (the quoted original
is already cut away).  Strict: every line it cannot read is a problem of
its own, so the reply can say which line and why.  Bounded: at most
``MAX_CODES`` codes and ``MAX_REASON_CHARS`` of reason; longer lines are
not read at all.  It also renders the example lines emails show."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mailflow.answers.reply_form import LineProblem, clean_line
from mailflow.answers.reply_words import DISCLAIMER, without_sign_off

MAX_CODES = 20
MAX_REASON_CHARS = 500
# No request line is this long; a hostile one must not cost time.
MAX_LINE_CHARS = 2000
# Only the top of the message is read.
MAX_LINES = 40

KEYWORD = "REQUEST"
_CODE = re.compile(r"^[A-Z0-9]{2,12}$")
_REQUEST_LINE = re.compile(r"^request\b\s*(?P<codes>[^:]*)(?::(?P<reason>.*))?$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[,;\s]+")
_SIGNATURE_DELIMITER = "-- "


@dataclass(frozen=True)
class RequestLines:
    """What the lines ask for: the codes in the order first written (each
    once, upper case) and the reason (reasons of several lines joined)."""

    codes: list[str]
    reason: str
    problems: list[LineProblem]

    @property
    def readable(self) -> bool:
        return bool(self.codes) and not self.problems


def example_line(codes: Sequence[str], reason: str | None = None) -> str:
    """A request line as emails show it: ``REQUEST RXB, RXC: reason``."""
    line = f"{KEYWORD} {', '.join(codes)}"
    return f"{line}: {reason}" if reason else line


def read_request_lines(text: str) -> RequestLines:
    """The requests at the top of ``text``, with a problem for each line
    that could not be read (and one when there is no request at all)."""
    codes: list[str] = []
    reasons: list[str] = []
    problems: list[LineProblem] = []
    for number, raw in enumerate(text.splitlines()[:MAX_LINES], start=1):
        if raw.rstrip("\r") == _SIGNATURE_DELIMITER or raw.strip() == "--":
            break
        if len(raw) > MAX_LINE_CHARS:
            problems.append(LineProblem(number, raw[:80], "this line is too long to read"))
            break
        line = clean_line(raw)
        if not line:
            continue
        if not _REQUEST_LINE.match(line):
            if codes or _ends_reading(line):
                break  # the request is read; what follows is prose or a signature
            problems.append(LineProblem(number, line, _NOT_A_REQUEST))
            continue
        try:
            line_codes, reason = read_line(line)
        except RequestLineError as exc:
            problems.append(LineProblem(number, line, str(exc)))
            continue
        codes.extend(c for c in line_codes if c not in codes)
        if reason and reason not in reasons:
            reasons.append(reason)
    if len(codes) > MAX_CODES:
        problems.append(LineProblem(0, "", f"ask for at most {MAX_CODES} organisations at once"))
    if not codes and not problems:
        problems.append(LineProblem(0, "", "no request found at the top of your message"))
    reason = "; ".join(reasons)
    if len(reason) > MAX_REASON_CHARS:
        too_long = f"the reason is too long: keep it under {MAX_REASON_CHARS} characters"
        problems.append(LineProblem(0, "", too_long))
    return RequestLines(codes, reason, problems)


class RequestLineError(Exception):
    pass


_NOT_A_REQUEST = (
    f"this line is not a request: write {example_line(['CODE'])} "
    "or REQUEST CODE: why you need it, on a line of its own at the top"
)


def read_line(line: str) -> tuple[list[str], str]:
    """The codes and reason of one cleaned request line."""
    match = _REQUEST_LINE.match(line)
    if match is None:
        raise RequestLineError(_NOT_A_REQUEST)
    written = [w for w in _SEPARATORS.split(match["codes"].strip()) if w]
    if not written:
        raise RequestLineError(
            f"name the organisation after {KEYWORD}, e.g. {example_line(['RXB'])}"
        )
    if len(written) > MAX_CODES:
        raise RequestLineError(f"ask for at most {MAX_CODES} organisations at once")
    codes: list[str] = []
    for word in written:
        code = word.upper()
        if not _CODE.match(code):
            raise RequestLineError(
                f"{word[:20]!r} is not an organisation code: separate codes with commas "
                f"and put the reason after a colon, e.g. {example_line(['RXB', 'RXC'], 'why')}"
            )
        if code not in codes:
            codes.append(code)
    reason = " ".join((match["reason"] or "").split())
    if "\ufffd" in reason:
        raise RequestLineError("part of the reason could not be read: write it again")
    return codes, reason


def _ends_reading(line: str) -> bool:
    """A sign-off ("Thanks, Ann") or a disclaimer: nothing of the request."""
    return not without_sign_off(line) or DISCLAIMER.search(line) is not None
