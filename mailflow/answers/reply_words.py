"""The words people use for a status, and how to tell a sentence that says
one ("we don't run ExampleVPN") from one that only mentions it ("not
complete yet", "will be done by Friday").  The reply form
(:mod:`mailflow.answers.reply_form`) decides what a line means; this module
only reports what the words in it say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailflow.answers.statuses import AnswerStatus

COMPLETE = AnswerStatus.COMPLETE
IN_PROGRESS = AnswerStatus.IN_PROGRESS
NOT_APPLICABLE = AnswerStatus.NOT_APPLICABLE
UNABLE = AnswerStatus.UNABLE

# Every word or phrase that may start an answer; the first of each is the
# one the form shows.
STATUS_WORDS: dict[AnswerStatus, tuple[str, ...]] = {
    COMPLETE: ("complete", "completed", "done", "remediated", "patched", "fixed", "resolved"),
    IN_PROGRESS: (
        "in progress",
        "in-progress",
        "investigating",
        "under investigation",
        "working on it",
        "in hand",
        "underway",
        "under way",
        "ongoing",
    ),
    NOT_APPLICABLE: (
        "not applicable",
        "not-applicable",
        "n/a",
        "na",
        "not relevant",
        "not affected",
        "does not apply",
        "doesn't apply",
    ),
    UNABLE: ("unable", "unable to implement", "cannot", "cannot implement", "can't", "can not"),
}
WORD_TO_STATUS = {word: status for status, words in STATUS_WORDS.items() for word in words}

# "unable to implement", "can't patch this", "not able to apply the update".
_UNABLE_PHRASE = (
    r"(?:unable|not able|cannot|can not|can't)(?:\s+to)?"
    r"(?:\s+(?:implement|patch|apply|update|upgrade|remediate|fix|comply|do (?:so|this|it))"
    r"(?:\s+(?:this|it|the (?:patch|update|fix|change|remediation)))?)?"
)
_WORD_ALTERNATIVES = "|".join(re.escape(w) for w in sorted(WORD_TO_STATUS, key=len, reverse=True))
# A status at the start of a line, then the end of the line or a separator.
STATUS_AT_START = re.compile(
    rf"^(?:(?P<unable>{_UNABLE_PHRASE})|(?P<word>{_WORD_ALTERNATIVES}))"
    r"(?=$|[\s:.,;!\-\u2013\u2014)])(?P<after>.*)$",
    re.IGNORECASE,
)


def status_at_start(text: str) -> tuple[AnswerStatus, str, str] | None:
    """The status ``text`` starts with, the words used, and the rest."""
    match = STATUS_AT_START.match(text)
    if match is None:
        return None
    if match["unable"] is not None:
        return UNABLE, match["unable"], match["after"]
    word = " ".join(match["word"].lower().split())
    return WORD_TO_STATUS[word], match["word"], match["after"]


# Phrases that say a status anywhere in a sentence.
_PHRASES: tuple[tuple[AnswerStatus, str], ...] = (
    (COMPLETE, r"\b(?:complete|completed|done|remediated|patched|fixed|resolved)\b"),
    (COMPLETE, r"\b(?:has|have) been (?:applied|updated|upgraded|installed)\b"),
    (COMPLETE, r"\b(?:patch(?:es)?|updates?|fix(?:es)?) (?:applied|installed|deployed)\b"),
    (IN_PROGRESS, r"\bin[ -]progress\b|\binvestigating\b|\bunder investigation\b"),
    (IN_PROGRESS, r"\bworking on (?:it|this|that)\b|\bin hand\b|\bunder ?way\b|\bongoing\b"),
    (IN_PROGRESS, r"\blooking into\b|\b(?:scheduled|planned|booked) for\b"),
    (IN_PROGRESS, r"\b(?:are|is|am) (?:currently |now )?(?:patching|updating|upgrading)\b"),
    (NOT_APPLICABLE, r"\bnot[ -]applicable\b|(?<!\w)n/a(?!\w)|\bnot (?:relevant|affected)\b"),
    (NOT_APPLICABLE, r"\bdo(?:es)? not apply\b|\b(?:doesn't|don't) apply\b"),
    (NOT_APPLICABLE, r"\b(?:we|i) (?:do not|don't|dont) (?:use|run|have|host|operate|own)\b"),
    (NOT_APPLICABLE, r"\b(?:no longer|never) (?:use|used|run|ran)\b"),
    (NOT_APPLICABLE, r"\bnot (?:in use|used|installed|deployed|present)\b"),
    # In a sentence, "cannot" is about remediation only when a remediation
    # verb follows: "we cannot patch", not "I can't open the link".
    (
        UNABLE,
        r"\b(?:unable|not able|can ?not|can't)(?: to)?(?: \w+){0,2}? (?:implement|patch|apply"
        r"|update|upgrade|remediate|fix|comply|install|deploy|do (?:this|so|it|that))\b",
    ),
)
_PHRASE_PATTERNS = [(status, re.compile(p, re.IGNORECASE)) for status, p in _PHRASES]

# Words just before a status word that undo it ("not done", "haven't
# patched") or put it in the future ("will be complete", "once fixed").
_NEGATIONS = frozenset({"not", "no", "never", "yet", "without", "nothing", "nor"})
_NOT_YET_DONE = frozenset(
    {"will", "would", "should", "shall", "to", "expect", "expected", "expecting", "hope"}
    | {"hoping", "aim", "aiming", "plan", "planning", "once", "when", "until", "if"}
    | {"please", "must", "need", "needs", "may", "might", "could", "soon", "before"}
)
_WORD = re.compile(r"[a-z']+")
_NEGATED_AFTER = re.compile(r"^\W*(?:not yet|not|no)\b|^\s*\?", re.IGNORECASE)
# Someone who does not know yet has not answered.
UNSURE = re.compile(
    r"\b(?:not sure|unsure|(?:do not|don't|dont) know|not (?:yet )?known|unknown|not certain"
    r"|uncertain|no idea|unclear|tbc|tbd|to be (?:confirmed|determined)|maybe|perhaps"
    r"|possibly)\b",
    re.IGNORECASE,
)


@dataclass
class Said:
    """What the words of a sentence say."""

    # Each status said plainly, with the words that said it.
    clear: dict[AnswerStatus, str] = field(default_factory=dict)
    # Status words that are negated or in the future: "not complete yet".
    unclear: list[str] = field(default_factory=list)
    # Words saying the person does not know yet: "not sure".
    unsure: str | None = None


def what_it_says(text: str) -> Said:
    said = Said()
    unsure = UNSURE.search(text)
    said.unsure = unsure.group(0) if unsure else None
    question = text.rstrip().endswith("?")
    found = sorted(
        (match.start(), -match.end(), order, status, match)
        for order, (status, pattern) in enumerate(_PHRASE_PATTERNS)
        for match in pattern.finditer(text)
    )
    taken_to = 0
    for start, _, _, status, match in found:
        if start < taken_to:
            continue  # part of a longer phrase already read ("not able to")
        taken_to = match.end()
        words = match.group(0)
        if status in (COMPLETE, IN_PROGRESS) and (question or _undone(text, start, taken_to)):
            said.unclear.append(words)
        else:
            said.clear.setdefault(status, words)
    return said


_CLAUSE_END = re.compile(r"[,.;:!?()\-\u2013\u2014]")


def _undone(text: str, start: int, end: int) -> bool:
    # Only the words of the same clause count: "updated to v5, patched".
    clause = _CLAUSE_END.split(text[max(0, start - 40) : start].lower())[-1]
    before = _WORD.findall(clause)[-3:]
    for word in before:
        if word in _NEGATIONS or word in _NOT_YET_DONE or word.endswith("n't"):
            return True
    return _NEGATED_AFTER.match(text[end : end + 20]) is not None


# Words that say nothing beyond the status: "We are now fully patched".
_FILLER = frozenset(
    {"we", "i", "it", "this", "that", "is", "are", "am", "was", "were", "have", "has", "been"}
    | {"all", "now", "the", "a", "an", "and", "already", "fully", "hi", "hello", "team"}
    | {"ok", "okay", "yes", "thanks", "thank", "you", "cheers", "regards", "status", "our"}
    | {"currently", "still", "everything", "here", "on", "at", "site", "side", "end"}
)


def says_only_the_status(text: str) -> bool:
    rest = text.lower()
    for _status, pattern in _PHRASE_PATTERNS:
        rest = pattern.sub(" ", rest)
    return all(word in _FILLER for word in _WORD.findall(rest))


# "Thanks, Ann" and the like at the end of an answer: a sign-off, not a note.
_SIGN_OFF = re.compile(
    r"(?:^|(?<=[.!,;\s]))(?i:many thanks|thanks(?: again)?|thank you|thx|cheers|regards"
    r"|kind regards|best regards|best wishes|warm regards|rgds|ta)"
    r"[!.,]*(?:\s+[A-Z][\w'.-]*){0,3}[!.]*\s*$"
)


def without_sign_off(text: str) -> str:
    return _SIGN_OFF.sub("", text).strip(" ,;-\u2013\u2014")


# A line that starts the disclaimer or banner an organisation's mail system
# adds: that paragraph is not the person's answer, whatever words it uses.
DISCLAIMER = re.compile(
    r"confidential|intended recipient|privileged|disclaimer|in error\b|may be monitored"
    r"|this (?:e-?mail|message)(?: and any (?:attachments|files)[\w ]*)? (?:is|are|may|contain)"
    r"|originated (?:from )?outside|external (?:e-?mail|sender)|do not click|nhsmail|unlawful"
    r"|unauthori[sz]ed",
    re.IGNORECASE,
)


# ------------------------------------------------------------ information

_MITIGATIONS = re.compile(
    r"(?:;|\.|,)?\s*\b(?:mitigations?\s*[:\-\u2013]?|mitigated by|workarounds?\s*:)\s*",
    re.IGNORECASE,
)
_REASON_LABEL = re.compile(r"^(?:reasons?\s*[:\-\u2013]?|because|as|since)\s+", re.IGNORECASE)
# After "complete": not done yet ("complete by Friday", "done? not yet").
NOT_DONE_YET = re.compile(
    r"^\s*(?:\?|not\b|no\b|yet\b|soon\b|shortly\b|tomorrow\b|later\b"
    r"|next\b(?!\s+(?:update|review)\b)|once\b|when\b"
    r"|by\s+(?:mon|tue|wed|thu|fri|sat|sun|end|close|tomorrow|next|the end|\d))",
    re.IGNORECASE,
)


def joined_information(texts: list[str]) -> str | None:
    """The information from several lines as one text, sign-offs dropped."""
    out = ""
    for text in texts:
        text = without_sign_off(text)
        if not text:
            continue
        out = f"{out}{'' if not out else ' ' if out[-1] in '.;:!' else '; '}{text}"
    return out or None


def reason_of(info: str | None) -> str | None:
    """ "Reason: X", "because X", "as X": X."""
    if info is None:
        return None
    return _REASON_LABEL.sub("", info).strip() or None


def reason_and_mitigations(info: str | None) -> tuple[str | None, str | None]:
    """ "X; mitigations: Y", "Reason: X. Mitigation: Y", "X, mitigated by Y"."""
    parts = _MITIGATIONS.split(info or "", maxsplit=1)
    reason = _REASON_LABEL.sub("", parts[0].strip()).strip(" ;.,") or None
    mitigations = parts[1].strip(" ;.,") if len(parts) > 1 else None
    return reason, mitigations or None
