"""The shared corpus of replies from real mail clients
(``shared/corpus/reply-clients`` beside the repository: ``standard/*.eml``
whole messages, ``html/*.html`` HTML bodies), what the person wrote in them, and each
reply rewritten so that the person answers ``RXA: complete`` while the
quoted original carries conflicting answers (``RXA: not applicable: x``,
``RXB: complete``): whatever reads a reply must read exactly the person's
answer."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.support.mail import parsed

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "reply-clients"
ANSWER = "RXA: complete"
CONFLICT = ("RXA: not applicable: x", "RXB: complete")

# What the person wrote in the corpus (see its README).
STANDARD_WORDS = "Hello"
HTML_WORDS = ["Hi. I am fine.", "Thanks,", "Alex"]
# The HTML alternative of a standard message, where it says something else.
STANDARD_HTML_WORDS = {"outlook.eml": "Allo! Follow up MIME!"}


def corpus() -> Path:
    if not CORPUS.is_dir():
        message = f"the reply corpus is missing: {CORPUS}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return CORPUS


def corpus_names(folder: str, pattern: str) -> list[str]:
    """Names to parametrize over; a placeholder when the corpus is missing,
    so that the test runs and fails (CI) or skips (elsewhere)."""
    names = sorted(p.name for p in (CORPUS / folder).glob(pattern)) if CORPUS.is_dir() else []
    return names or ["corpus-missing"]


def subn_all(text: str, replacements: list[tuple[str, str]]) -> tuple[str, int]:
    total = 0
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text)
        total += count
    return text, total


def rewrite_standard(raw: bytes, name: str) -> bytes:
    """The same message with the person's words replaced by the answer and
    the quoted original made to contain conflicting answers; transfer
    encodings are kept (base64 parts are re-encoded, the others edited as
    they stand, quoted-printable soft breaks and all)."""
    message = parsed(raw)
    person_total = quote_total = 0
    for part in message.walk():
        if part.is_multipart():
            continue
        subtype = part.get_content_subtype()
        if subtype == "plain":
            person = [(r"(?m)^Hello *$", ANSWER)]
            quote = [
                (r"(?m)^> ?Hi *$", "> " + "\n> ".join(CONFLICT)),
                (r"I'm not happy", "\n".join(CONFLICT)),
            ]
        elif subtype == "html":
            words = STANDARD_HTML_WORDS.get(name, STANDARD_WORDS)
            person = [(re.escape(words), ANSWER)]
            quote = [
                (r"(?<!\w)Hi(?=\s*(?:<br>|</blockquote>))", "<br>".join(CONFLICT)),
                (r"I'm not happy", "<br>".join(CONFLICT)),
            ]
        else:
            continue
        encoded = str(part.get("Content-Transfer-Encoding", "")).lower() == "base64"
        body = part.get_content() if encoded else part.get_payload()
        assert isinstance(body, str)
        body, person_count = subn_all(body, person[:1])
        body, quote_count = subn_all(body, quote)
        assert person_count == 1, f"{name} {subtype}: the person's words not found"
        person_total += person_count
        quote_total += quote_count
        if encoded:
            part.set_content(body, subtype=subtype, charset="utf-8", cte="base64")
        else:
            part.set_payload(body)
    assert person_total >= 1
    assert quote_total >= 1, f"{name}: no quoted line was given a conflicting answer"
    return message.as_bytes()
