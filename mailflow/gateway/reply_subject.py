"""What a person wrote in the Subject of a reply, once the words of our own
subject are taken away.

Some people answer in the Subject alone ("Re: [CC-4720 HIGH] ... complete");
the reply form reads what ``reply_subject`` leaves when the body holds no
answer.  Removed: "Re:"-style prefixes in many languages, tags ours and
mail systems add ("[HIGH]", "[EXTERNAL]"), the alert's reference and title
(also cut short with "..."), and our "respond by" deadline.
"""

from __future__ import annotations

import re
from email.message import EmailMessage

__all__ = ["MAX_SUBJECT_CHARS", "reply_subject", "subject_of"]

# "Re:", "AW:", "Fwd:" and the other prefixes clients add, repeated.
_SUBJECT_PREFIXES = re.compile(
    r"^(?:\s*(?:re|aw|sv|vs|antw|odp|ynt|fw|fwd|wg|tr|rif|r)\s*(?:\[\d+\])?\s*[:\uff1a])+",
    re.IGNORECASE,
)
# Tags our subject carries ("[HIGH]") and those mail systems add ("[EXTERNAL]").
_SUBJECT_TAGS = re.compile(
    r"\[\s*(?:critical|high|medium|low|external(?: email)?|ext|secure|official[^\]]{0,30})\s*\]",
    re.IGNORECASE,
)
# Our subject's deadline: "- respond by Tuesday 1 December 2026 at 09:00 GMT".
_RESPOND_BY = re.compile(
    r"[-\u2013\u2014]?\s*respond by\b[^:]{0,60}?\d{1,2}:\d{2}(?:\s+[A-Z][A-Za-z0-9+-]{0,5}\b)?",
    re.IGNORECASE,
)
MAX_SUBJECT_CHARS = 1000
# Fewer characters of a title before "..." might be a person's own words.
MIN_SHORTENED_TITLE = 8


def subject_of(message: EmailMessage) -> str:
    """A message's Subject as text, bounded; "" when absent or unreadable."""
    try:
        value = message.get("Subject")
    except Exception:  # the email package raises many kinds on broken headers
        return ""
    return "" if value is None else str(value)[:MAX_SUBJECT_CHARS]


def reply_subject(subject: str, *, reference: str, title: str) -> str:
    """What the person wrote in a reply's subject: without "Re:" prefixes,
    tags, and the words of our own subject (the alert's reference, title
    and deadline).  "" when there is nothing else."""
    subject = " ".join(subject[:MAX_SUBJECT_CHARS].split())
    subject = _SUBJECT_TAGS.sub(" ", _SUBJECT_PREFIXES.sub("", subject))
    # Our own tag, "[CC-4720 HIGH]", and a title shortened to fit a phone.
    ours_tag = rf"\[\s*{re.escape(reference)}(?:\s+(?:critical|high|medium|low))?\s*\]"
    subject = re.sub(ours_tag, " ", subject, flags=re.IGNORECASE)
    subject = _drop_shortened_title(subject, " ".join(title.split()))
    for ours in (title, reference):
        words = ours.split()
        if words:
            pattern = r"\s*".join(re.escape(word) for word in words)
            subject = re.sub(pattern, " ", subject, flags=re.IGNORECASE)
    subject = _SUBJECT_PREFIXES.sub("", _RESPOND_BY.sub(" ", subject))
    return " ".join(subject.split()).strip(" :-\u2013\u2014")


def _drop_shortened_title(subject: str, title: str) -> str:
    """The subject without the start of ``title`` cut short with "...", as
    our subjects carry a long title."""
    lowered, wanted = subject.lower(), title.lower()
    end = lowered.find("...")
    while end != -1:
        for length in range(min(len(wanted), end), MIN_SHORTENED_TITLE - 1, -1):
            if lowered[end - length : end] == wanted[:length]:
                return subject[: end - length] + " " + subject[end + 3 :]
        end = lowered.find("...", end + 3)
    return subject
