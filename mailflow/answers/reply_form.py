"""The reply form: the one place that knows how an answer is written in an
email, both to show it in the alert email and to read it back from a reply.

The form asks for one line per organisation, at the top of the reply::

    RXA: complete
    RXA, RXB: in progress: patching this weekend, expected 5 December
    ALL: not applicable: we do not run the product
    RXC: unable: the supplier has no fix yet; mitigations: service taken offline
    complete                       (when the person answers for one organisation)

People write otherwise, so a reply is read generously; the person sees
exactly what will be recorded and confirms it with their second factor,
so a generous reading is safe, but a silent misreading is not.  The rules:

1. Case, bullets, bold markers and blank lines do not matter.  A colon, a
   dash or nothing may separate the codes, the status and what follows:
   ``rxa complete``, ``RXA - complete``, ``RXA is complete``.  Without a
   colon, a code is one the person holds, ``ALL``, or a word in capitals.
2. A status is one of the words in ``STATUS_WORDS`` (complete, done,
   patched, fixed, remediated, resolved; in progress, investigating, working
   on it, in hand; not applicable, n/a, not relevant; unable, cannot, can't
   patch...).  What follows it is the note, reason or mitigations:
   ``N/A - we don't run ExampleVPN`` gives the reason "we don't run
   ExampleVPN"; ``Unable to implement. Reason: X. Mitigation: Y`` gives
   both; "Reason:" and "Mitigations:" lines under an answer add to it.
   A sign-off after the status is dropped: ``Complete. Thanks, Ann`` is
   complete with no note.  An in-progress or unable answer may say when
   its next update or review is due (``next update 12 December``,
   ``update by 12 Dec``, ``review 1 March``, or a ``Next update: ...``
   line under it): that clause is taken out before the expected date and
   the note are read (:func:`mailflow.answers.reply_dates.next_update_in`).
3. A sentence that says one status plainly is an answer ("We are
   investigating", "We don't use ExampleVPN": its reason is the sentence;
   "cannot" only with a remediation verb, "we cannot patch", not "I can't
   open the link").  The words of the reply decide, in
   :mod:`mailflow.answers.reply_words`.
4. Never a guess: a status word that is negated or in the future ("not
   complete yet", "we have not patched", "complete by Friday"), two
   different statuses (on one line or for one organisation), "not sure
   yet", a code the person does not hold, a required reason or mitigation
   missing, or characters the charset could not decode before the status
   make the reply ambiguous: nothing is recorded, and the "not recorded"
   email names each such line and what is wrong with it.
5. Lines without any status word (greetings, sign-offs, signatures) are
   passed over, and so is a disclaimer paragraph from its first tell-tale
   line (confidential, intended recipient, ...), and any line longer than
   ``MAX_LINE_CHARS``.  If nothing is an answer, the reply is refused.
6. A person who holds several organisations must name them (or ``ALL``,
   in capitals when there is no colon: "All done" names nobody).  A
   sentence without a code is accepted only when every coded answer has
   its status; its words are then added to each of them.
7. What the person wrote is read (the quoted original is cut away by
   :mod:`mailflow.gateway.reply_text`, which keeps text written below a quote);
   only when it holds no answer and no problem is the subject read, as a
   last resort, with our own subject removed from it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.reply_dates import MONTHS, find_date, is_next_update_line
from mailflow.answers.reply_lines import (
    Found,
    LineError,
    LineProblem,
    ReplyAnswers,
    ReplyNotUnderstood,
)
from mailflow.answers.reply_words import (
    DISCLAIMER,
    NOT_DONE_YET,
    STATUS_WORDS,
    WORD_TO_STATUS,
    status_at_start,
    what_it_says,
)
from mailflow.answers.statuses import AnswerStatus

__all__ = [
    "ALL",
    "MAX_LINE_CHARS",
    "MONTHS",
    "STATUS_WORDS",
    "WORD_TO_STATUS",
    "FormOrganisation",
    "LineProblem",
    "ReplyForm",
    "ReplyNotUnderstood",
    "build_reply_form",
    "find_date",
    "parse_reply",
]

ALL = "ALL"


@dataclass(frozen=True)
class FormOrganisation:
    code: str
    name: str


@dataclass(frozen=True)
class ReplyForm:
    """What the alert email shows so a person can answer by replying."""

    organisations: list[FormOrganisation]
    example_lines: list[str] = field(default_factory=list)
    status_lines: list[str] = field(default_factory=list)
    single: bool = False


def build_reply_form(organisations: Sequence[tuple[str, str]]) -> ReplyForm:
    orgs = [FormOrganisation(code, name) for code, name in organisations]
    if len(orgs) == 1:
        examples = [f"{orgs[0].code}: complete", "(or just: complete)"]
    else:
        examples = [f"{o.code}: complete" for o in orgs[:3]]
        examples.append(f"{ALL}: not applicable: we do not run the product")
    status_lines = [
        "complete  (optional note after a colon)",
        "in progress  (optional: expected 5 December; next update 2 December)",
        "not applicable: REASON",
        "unable: REASON; mitigations: WHAT YOU HAVE DONE INSTEAD  (optional: review 1 March)",
    ]
    return ReplyForm(orgs, examples, status_lines, single=len(orgs) == 1)


_CODE = r"[A-Za-z0-9]{3,10}"
_CODES = rf"{_CODE}(?:\s*(?:,|&|\band\b)\s*{_CODE})*"
_CODE_SEPARATOR = re.compile(r"\s*(?:,|&|\band\b)\s*", re.IGNORECASE)
_COLON_LINE = re.compile(rf"^(?P<orgs>{_CODES})\s*:\s*(?P<rest>.*)$", re.IGNORECASE)
# "RXA - complete", "rxa complete", "RXA and RXB are complete".
_LOOSE_LINE = re.compile(
    rf"^(?P<orgs>{_CODES})(?:\s*[-\u2013\u2014=]\s*|\s+(?:(?:is|are|has been|have been|now)\s+)?)"
    r"(?P<rest>\S.*)$",
    re.IGNORECASE,
)
_CAPITALS = re.compile(r"^(?=.*[A-Z])[A-Z0-9]{3,10}$")
# "Status: complete": a label, not an organisation.
_LABELS = frozenset({"STATUS", "ANSWER", "UPDATE", "RESPONSE", "REPLY", "OUTCOME", "RESULT"})
# A line that adds to the answer above it.
_FIELD_LINE = re.compile(
    r"^(?:reasons?|mitigations?|mitigated by|workarounds?)\b\s*[:\-\u2013]?\s*\S", re.IGNORECASE
)
_DECORATION = re.compile(r"^(?:[-*•·\u2013>]+|\d{1,2}[.)])\s+")
_SIGNATURE_DELIMITER = "-- "
#: Longer lines are never read as answers (no answer is this long, and a
#: hostile one must not cost time).
MAX_LINE_CHARS = 2000
_HOW_TO_ANSWER = "use complete, in progress, not applicable or unable"


def clean_line(line: str) -> str:
    """A line as the reply form reads it: without bullets, emphasis and
    odd spaces (other line grammars read lines the same way)."""
    return _clean(line)


def _clean(line: str) -> str:
    line = line.replace("\u00a0", " ").replace("\u200b", "").replace("\u2019", "'")
    line = line.replace("**", "").replace("__", "").strip()
    line = _DECORATION.sub("", line).strip()
    # A line wrapped in single emphasis markers: *complete* or _complete_.
    if len(line) > 2 and line[0] == line[-1] and line[0] in "*_":
        line = line[1:-1].strip()
    return " ".join(line.split())


def parse_reply(
    text: str, *, held: Sequence[str], today: date, subject: str | None = None
) -> list[AnswerValue]:
    """Read the answers in what the person wrote (quoted text already cut
    away).  ``held`` is the codes of the organisations they answer for;
    ``subject`` is what they wrote in the subject, read only when the text
    holds no answer.  Returns one AnswerValue per organisation, or raises
    ReplyNotUnderstood listing every line that could not be read."""
    held_codes = [c.upper() for c in held]
    answers, problems = _read(text.splitlines(), held_codes, today, first=1)
    if not answers and not problems and subject and subject.strip():
        answers, problems = _read([subject], held_codes, today, first=0)
        problems = [
            LineProblem(0, p.text, f"in the subject {p.text!r}: {p.problem}") for p in problems
        ]
    if not answers and not problems:
        problems.append(LineProblem(0, "", "no answer found at the top of the reply"))
    if problems:
        raise ReplyNotUnderstood(sorted(problems, key=lambda p: p.line))
    return answers


def _read(
    lines: Sequence[str], held: list[str], today: date, *, first: int
) -> tuple[list[AnswerValue], list[LineProblem]]:
    reply = ReplyAnswers(held)
    in_disclaimer = False
    for number, raw in enumerate(lines, start=first):
        if raw.rstrip("\r") == _SIGNATURE_DELIMITER or raw.strip() == "--":
            break
        line = _clean(raw) if len(raw) <= MAX_LINE_CHARS else ""
        if not line:
            in_disclaimer = False  # a disclaimer runs to the end of its paragraph
        elif in_disclaimer or _starts_disclaimer(line):
            in_disclaimer = True
        else:
            reply.read_line(line, number, _read_line)
    return reply.finish(today)


def _starts_disclaimer(line: str) -> bool:
    if DISCLAIMER.search(line) is None or status_at_start(line) is not None:
        return False
    # "RXA: not applicable: confidential system" is an answer all the same.
    coded = _COLON_LINE.match(line)
    return coded is None or status_at_start(coded["rest"].strip()) is None


def _read_line(line: str, number: int, held: list[str]) -> Found | str | None:
    """What one line says: an answer, a "Reason:" or "Mitigations:" line
    adding to the answer above (returned as text), or nothing."""
    colon = _COLON_LINE.match(line)
    if colon is not None:
        codes = [c.upper() for c in _CODE_SEPARATOR.split(colon["orgs"])]
        rest = colon["rest"].strip()
        if codes[0] in _LABELS and len(codes) == 1 and rest:
            return _read_line(rest, number, held)
        if all(c == ALL or c in held for c in codes) or status_at_start(rest):
            return _read_coded(codes, rest, line, number, held)
    loose = _LOOSE_LINE.match(line)
    if loose is not None and status_at_start(loose["rest"]):
        written = _CODE_SEPARATOR.split(loose["orgs"])
        # Without a colon, "All done" is a sentence; "ALL done" names them all.
        if all(w.upper() in held or _CAPITALS.match(w) for w in written):
            codes = [w.upper() for w in written]
            return _read_coded(codes, loose["rest"].strip(), line, number, held)
    if status_at_start(line) is not None:
        return _from_start(line, line, number, codes=None, explicit=False)
    if _FIELD_LINE.match(line) or is_next_update_line(line):
        return line
    return _from_sentence(line, line, number, held)


def _read_coded(
    codes: list[str], rest: str, line: str, number: int, held: list[str]
) -> Found | None:
    for code in codes:
        if code != ALL and code not in held:
            raise LineError(f"{code} is not an organisation you answer for")
    if ALL in codes and len(codes) > 1:
        raise LineError("ALL already means every organisation: give it alone")
    if not rest:
        return None  # an untouched line of the form: no answer for these
    targets = list(held) if codes == [ALL] else codes
    if status_at_start(rest) is not None:
        return _from_start(rest, line, number, codes=targets, explicit=True)
    found = _from_sentence(rest, line, number, held, codes=targets)
    if found is None:
        first = rest.split(":")[0].strip()
        raise LineError(f"{first!r} is not a status: {_HOW_TO_ANSWER}")
    return found


def _from_start(
    text: str, line: str, number: int, *, codes: list[str] | None, explicit: bool
) -> Found:
    start = status_at_start(text)
    assert start is not None
    status, words, after = start
    if status in (AnswerStatus.COMPLETE, AnswerStatus.IN_PROGRESS) and NOT_DONE_YET.match(after):
        raise LineError(
            f"{words!r} followed by {after.strip()!r} does not say it is "
            f"{status.label.lower()} now: {_HOW_TO_ANSWER}"
        )
    after = after.strip()
    separated = bool(after) and after[0] in ":-\u2013\u2014.,;!"
    if separated:
        after = after[1:].strip()
    checked = status in (AnswerStatus.COMPLETE, AnswerStatus.IN_PROGRESS)
    others = set(what_it_says(after).clear) - {status} if after and checked else set()
    if others:
        raise LineError(_two_statuses(status, *others))
    if checked and after and not separated:
        # "Patched last night": the whole sentence is the note.
        return Found(number, line, status, codes, text, explicit=explicit, sentence=True)
    return Found(number, line, status, codes, after or None, explicit=explicit)


def _from_sentence(
    text: str, line: str, number: int, held: list[str], codes: list[str] | None = None
) -> Found | None:
    said = what_it_says(text)
    if said.unsure is not None:
        raise LineError(
            f"{said.unsure!r} is not a status we can record: when you know, reply again; "
            "while you are finding out, the status is in progress"
        )
    if len(said.clear) > 1:
        raise LineError(_two_statuses(*said.clear))
    if not said.clear:
        if said.unclear:
            raise LineError(
                f"this mentions {said.unclear[0]!r} but does not say it is so now: "
                f"{_HOW_TO_ANSWER}, e.g. in progress"
            )
        return None  # prose
    (status,) = said.clear
    if codes is None:
        named = [c for c in held if re.search(rf"\b{re.escape(c)}\b", text)]
        codes = named or None
    return Found(number, line, status, codes, text, explicit=False, sentence=True)


def _two_statuses(*statuses: AnswerStatus) -> str:
    labels = " and ".join(s.label.lower() for s in statuses)
    return f"this line reads as {labels}: give one status per organisation"
