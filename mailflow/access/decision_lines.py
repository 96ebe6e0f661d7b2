"""The decision form: the one place that knows how an administrator
decides an access request by reply, both to show the lines in the
decision email and to read them back::

    APPROVE
    DENY: we do not work with this supplier
    DENY

As for answers (:mod:`mailflow.answers.reply_form`), case, bullets, bold
markers and blank lines do not matter, a colon, a dash or nothing may
separate the word from a reason, a sign-off after it is dropped, and a
"Reason:" line under it adds to it.  The quoted original is cut away
before (by the gateway).  Never a guess: two different decisions, or a
line that mentions approving or denying without starting with the word
("I would not approve this"), make the reply not understood, and
nothing is recorded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mailflow.access.deciding import MAX_DECISION_REASON
from mailflow.access.decision_links import Verb
from mailflow.answers.reply_form import clean_line
from mailflow.answers.reply_lines import LineProblem, ReplyNotUnderstood
from mailflow.answers.reply_words import DISCLAIMER, joined_information, without_sign_off

__all__ = ["FORM_LINES", "DecisionWords", "LineProblem", "ReplyNotUnderstood", "parse_decision"]

# What the decision email shows, one line each.
FORM_LINES = ("APPROVE", "DENY: REASON")

MAX_LINE_CHARS = 2000
# A decision is a line and perhaps a reason: past this many readable
# lines, the rest of the reply is not read.
MAX_LINES = 50
_SIGNATURE_DELIMITER = "-- "
_WORDS = {
    "approve": Verb.APPROVE,
    "approved": Verb.APPROVE,
    "yes approve": Verb.APPROVE,
    "deny": Verb.DENY,
    "denied": Verb.DENY,
    "reject": Verb.DENY,
    "rejected": Verb.DENY,
    "decline": Verb.DENY,
    "declined": Verb.DENY,
}
_AT_START = re.compile(
    r"^(?:decision\s*:\s*)?(?P<word>"
    + "|".join(sorted(_WORDS, key=len, reverse=True))
    + r")(?=$|[\s:.,;!\-\u2013\u2014])\s*[:.,;!\-\u2013\u2014]?\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_MENTION = re.compile(r"\b(?:approv\w*|den(?:y|ied|ial)|reject\w*|declin\w*)\b", re.IGNORECASE)
_REASON_LINE = re.compile(r"^(?:reasons?|because)\s*[:\-\u2013]?\s*(?P<text>\S.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class DecisionWords:
    """What a reply decides: the verb and, if given, the reason."""

    verb: Verb
    reason: str


def parse_decision(text: str) -> DecisionWords:
    """The decision in what the administrator wrote, or
    ``ReplyNotUnderstood`` naming each line that could not be read."""
    found: list[tuple[int, str, Verb, list[str]]] = []
    problems: list[LineProblem] = []
    for number, line in _readable_lines(text.splitlines()):
        match = _AT_START.match(line)
        if match is not None:
            found.append((number, line, _WORDS[" ".join(match["word"].lower().split())], []))
            rest = match["rest"].strip()
            if rest:
                found[-1][3].append(rest)
            continue
        reason = _REASON_LINE.match(line)
        if reason is not None and found:
            found[-1][3].append(reason["text"])
        elif _MENTION.search(line):
            problems.append(
                LineProblem(
                    number,
                    line,
                    "this mentions a decision but does not start with APPROVE or DENY: "
                    "write APPROVE, or DENY: REASON, on a line of its own",
                )
            )
    verbs = {verb for _, _, verb, _ in found}
    if len(verbs) > 1:
        number, line, _, _ = found[-1]
        problems.append(
            LineProblem(number, line, "this reply both approves and denies: give one decision")
        )
    if not found and not problems:
        problems.append(LineProblem(0, "", "no APPROVE or DENY found at the top of the reply"))
    if problems:
        raise ReplyNotUnderstood(sorted(problems, key=lambda p: p.line))
    reasons = [text for _, _, _, texts in found for text in texts]
    written = joined_information(reasons) or ""
    if len(written) > MAX_DECISION_REASON:
        number, line, _, _ = found[0]
        raise ReplyNotUnderstood(
            [
                LineProblem(
                    number,
                    line[:80],
                    f"the reason is {len(written):,} characters long: "
                    f"give it in at most {MAX_DECISION_REASON:,}",
                )
            ]
        )
    return DecisionWords(found[0][2], written)


def _readable_lines(lines: Sequence[str]) -> list[tuple[int, str]]:
    """The person's lines, cleaned, up to their signature, without a
    disclaimer paragraph or over-long lines."""
    out: list[tuple[int, str]] = []
    in_disclaimer = False
    for number, raw in enumerate(lines, start=1):
        if raw.rstrip("\r") == _SIGNATURE_DELIMITER or raw.strip() == "--":
            break
        line = clean_line(raw) if len(raw) <= MAX_LINE_CHARS else ""
        if not line:
            in_disclaimer = False
        elif in_disclaimer or (DISCLAIMER.search(line) and not _AT_START.match(line)):
            in_disclaimer = True
        else:
            out.append((number, without_sign_off(line) or line))
            if len(out) >= MAX_LINES:
                break
    return out
