"""Answers as people really write them: every message in
tests/corpus/replies is a whole reply (greetings, signatures, disclaimers,
quotes above or below, HTML only, the answer in the subject...) read the way
the inbound job reads it, and must give exactly the answers it lists or ask
exactly the questions it lists.

Each .eml file says what it expects in its own headers:

- ``X-Corpus-Story``: what the person did, in words;
- ``X-Corpus-Held``: the organisations the person answers for;
- ``X-Corpus-Answer``: ``CODE STATUS`` then ``| field=value`` for each of
  note, reason, mitigations, expected (a date) and line (where the answer was
  read; 0 is the subject); a field not listed must be empty;
- ``X-Corpus-Ask``: ``LINE | words of the question`` for each line the
  "not recorded" email must name (0: the reply as a whole, or its subject).
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.reply_form import ReplyNotUnderstood, parse_reply
from mailflow.answers.statuses import AnswerStatus
from mailflow.gateway.reply_subject import reply_subject, subject_of
from mailflow.gateway.reply_text import written_text

CORPUS = Path(__file__).parent / "corpus" / "replies"
TODAY = date(2026, 11, 26)
REFERENCE = "CC-4720"
TITLE = "Remote code execution in ExampleVPN appliances"
CASES = sorted(path.stem for path in CORPUS.glob("*.eml"))


@dataclass(frozen=True)
class Case:
    story: str
    held: list[str]
    answers: list[tuple[str, AnswerStatus, dict[str, str]]]
    asks: list[tuple[int, str]]


def load(name: str) -> tuple[EmailMessage, Case]:
    message = email.message_from_bytes(
        (CORPUS / f"{name}.eml").read_bytes(), policy=email.policy.default
    )
    assert isinstance(message, EmailMessage)
    answers = []
    for header in message.get_all("X-Corpus-Answer", []):
        head, *fields = (part.strip() for part in str(header).split(" | "))
        code, status = head.split()
        values = dict(field.split("=", 1) for field in fields)
        answers.append((code, AnswerStatus(status), values))
    asks = []
    for header in message.get_all("X-Corpus-Ask", []):
        line, words = str(header).split(" | ", 1)
        asks.append((int(line), words.strip()))
    held = [code.strip() for code in str(message["X-Corpus-Held"]).split(",")]
    case = Case(str(message["X-Corpus-Story"]), held, answers, asks)
    assert bool(case.answers) != bool(case.asks), f"{name}: expect answers or questions"
    return message, case


def read(message: EmailMessage, held: list[str]) -> list[AnswerValue]:
    """The reading path of the inbound job: the written text, then the
    subject as a last resort."""
    subject = reply_subject(subject_of(message), reference=REFERENCE, title=TITLE)
    return parse_reply(written_text(message), held=held, today=TODAY, subject=subject)


def expected(code: str, status: AnswerStatus, values: dict[str, str]) -> dict[str, object]:
    on = values.get("expected")
    return {
        "organisation": code,
        "status": status,
        "note": values.get("note"),
        "reason": values.get("reason"),
        "mitigations": values.get("mitigations"),
        "expected_on": date.fromisoformat(on) if on else None,
        **({"line": int(values["line"])} if "line" in values else {}),
    }


def actual(answer: AnswerValue, with_line: bool) -> dict[str, object]:
    return {
        "organisation": answer.organisation,
        "status": answer.status,
        "note": answer.note,
        "reason": answer.reason,
        "mitigations": answer.mitigations,
        "expected_on": answer.expected_on,
        **({"line": answer.line} if with_line else {}),
    }


def test_the_corpus_has_at_least_sixty_replies_for_one_and_for_several_organisations() -> None:
    held = [load(name)[1].held for name in CASES]

    assert len(CASES) >= 60
    assert sum(len(h) == 1 for h in held) >= 30
    assert sum(len(h) > 1 for h in held) >= 15


@pytest.mark.parametrize("name", CASES)
def test_a_reply_as_people_write_it_is_read_or_asked_about(name: str) -> None:
    message, case = load(name)

    if case.asks:
        with pytest.raises(ReplyNotUnderstood) as caught:
            read(message, case.held)
        problems = [(p.line, p.problem) for p in caught.value.problems]
        assert len(problems) == len(case.asks), f"{case.story}: {problems}"
        for (line, words), (found_line, problem) in zip(case.asks, problems, strict=True):
            assert (found_line, words in problem) == (line, True), f"{case.story}: {problems}"
    else:
        answers = read(message, case.held)
        want = [expected(code, status, values) for code, status, values in case.answers]
        assert len(answers) == len(case.answers), f"{case.story}: {answers}"
        pairs = zip(answers, case.answers, strict=True)
        got = [actual(answer, "line" in values) for answer, (_, _, values) in pairs]
        assert got == want, case.story
