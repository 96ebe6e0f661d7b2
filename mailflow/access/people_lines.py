"""People lines: the one grammar an administrator writes to change who
answers for their organisation, both to show it in emails and to read it
back from one.  One line each, at the top of the message::

    ADD jane.smith@trust-b.nhs.uk responder Jane Smith
    ADD joe@trust-b.nhs.uk administrator Joe Bloggs
    ADD ops@trust-b.nhs.uk alert-only Operations Desk
    REMOVE bob@trust-b.nhs.uk
    ROLE bob@trust-b.nhs.uk administrator
    LIST
    RXB: REMOVE bob@trust-b.nhs.uk     (naming the organisation)

Case, bullets and bold markers do not matter; lines that start with no
verb (greetings, sign-offs) are passed over, and reading stops at a
signature delimiter or a disclaimer.  A line that starts with a verb but
says it wrongly is a problem, never a guess: nothing is changed, and the
reply names each such line.  At most ``MAX_CHANGES`` lines are read.
Pure: no database, no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mailflow.answers.reply_form import clean_line
from mailflow.answers.reply_lines import LineProblem
from mailflow.answers.reply_words import DISCLAIMER
from mailflow.core.models import Role

__all__ = [
    "MAX_CHANGES",
    "LineProblem",
    "PeopleLine",
    "PeopleLinesNotUnderstood",
    "Verb",
    "example_lines",
    "parse_people_lines",
    "render_line",
]

MAX_CHANGES = 50
MAX_LINE_CHARS = 500
MAX_NAME_CHARS = 200


class Verb(enum.StrEnum):
    ADD = "ADD"
    REMOVE = "REMOVE"
    ROLE = "ROLE"
    LIST = "LIST"


# The words a role may be written as; the first is how we write it.
ROLE_WORDS: dict[Role, tuple[str, ...]] = {
    Role.RESPONDER: ("responder",),
    Role.ADMINISTRATOR: ("administrator", "admin"),
    Role.ALERT_ONLY: ("alert-only", "alert only", "alertonly", "alert_only"),
}
_WORD_TO_ROLE = {w: role for role, words in ROLE_WORDS.items() for w in words}
_ROLE_HELP = "responder, administrator or alert-only"


@dataclass(frozen=True)
class PeopleLine:
    """One change (or LIST), as written on line ``line`` of the message."""

    verb: Verb
    line: int = 0
    # The organisation named before a colon, upper-cased; None when none.
    code: str | None = None
    email: str | None = None
    role: Role | None = None
    name: str | None = None

    def describe(self) -> str:
        """In words, for the confirm email and page."""
        where = f" at {self.code}" if self.code else ""
        if self.verb is Verb.ADD:
            who = f"{self.name} <{self.email}>" if self.name else str(self.email)
            return f"Add {who} as {self.role}{where}"
        if self.verb is Verb.REMOVE:
            return f"Remove {self.email}{where}"
        if self.verb is Verb.ROLE:
            return f"Make {self.email} {self.role}{where}"
        return f"List the people{where}"


class PeopleLinesNotUnderstood(Exception):
    def __init__(self, problems: Sequence[LineProblem]) -> None:
        super().__init__("; ".join(f"line {p.line}: {p.problem}" for p in problems))
        self.problems = list(problems)


def render_line(line: PeopleLine) -> str:
    """The line as an administrator would write it (parsed back, the same)."""
    prefix = f"{line.code}: " if line.code else ""
    if line.verb is Verb.ADD:
        name = f" {line.name}" if line.name else ""
        return f"{prefix}ADD {line.email} {line.role}{name}"
    if line.verb is Verb.REMOVE:
        return f"{prefix}REMOVE {line.email}"
    if line.verb is Verb.ROLE:
        return f"{prefix}ROLE {line.email} {line.role}"
    return f"{prefix}LIST"


def example_lines(code: str | None = None, domain: str = "example.nhs.uk") -> list[str]:
    """One example of each line, for emails that show how to write them."""
    prefix = f"{code}: " if code else ""
    return [
        f"{prefix}ADD jane.smith@{domain} responder Jane Smith",
        f"{prefix}ADD joe.bloggs@{domain} administrator Joe Bloggs",
        f"{prefix}ADD service.desk@{domain} alert-only Service Desk",
        f"{prefix}REMOVE bob@{domain}",
        f"{prefix}ROLE bob@{domain} administrator",
        f"{prefix}LIST",
    ]


_PREFIX = re.compile(r"^(?P<code>[A-Za-z0-9]{3,10})\s*:\s*(?P<rest>.*)$")
_VERB = re.compile(r"^(?P<verb>add|remove|role|list)\b[:\s]*(?P<rest>.*)$", re.IGNORECASE)
# Strict: the address as one token, checked in full by the domain later.
_EMAIL = re.compile(r"^<?(?P<email>[^\s@<>]{1,64}@[^\s@<>]{1,190}\.[^\s@<>]{2,63})>?$")
_SIGNATURE_DELIMITER = "-- "


def parse_people_lines(text: str) -> list[PeopleLine]:
    """The people lines in what the administrator wrote (quoted text
    already cut away), or PeopleLinesNotUnderstood naming every line that
    could not be read (also when there is none)."""
    lines: list[PeopleLine] = []
    problems: list[LineProblem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.rstrip("\r") == _SIGNATURE_DELIMITER or raw.strip() == "--":
            break
        line = clean_line(raw) if len(raw) <= MAX_LINE_CHARS else ""
        if not line:
            continue
        if DISCLAIMER.search(line) and _VERB.match(line) is None:
            break
        try:
            found = read_line(line, number)
        except ValueError as exc:
            problems.append(LineProblem(number, line, str(exc)))
            continue
        if found is None:
            continue
        if len(lines) >= MAX_CHANGES:
            problems.append(
                LineProblem(number, line, f"at most {MAX_CHANGES} lines in one message")
            )
            break
        lines.append(found)
    if not lines and not problems:
        problems.append(LineProblem(0, "", "no ADD, REMOVE, ROLE or LIST line found"))
    if problems:
        raise PeopleLinesNotUnderstood(problems)
    return lines


def read_line(line: str, number: int = 0) -> PeopleLine | None:
    """One line: a PeopleLine, None for a line with no verb (a greeting),
    or ValueError saying what is wrong."""
    code = None
    prefix = _PREFIX.match(line)
    if prefix is not None and _VERB.match(prefix["rest"]):
        code, line = prefix["code"].upper(), prefix["rest"]
    verb_match = _VERB.match(line)
    if verb_match is None:
        return None
    verb = Verb(verb_match["verb"].upper())
    words = verb_match["rest"].split()
    if verb is Verb.LIST:
        if words:
            raise ValueError("LIST takes nothing after it (name the organisation as RXB: LIST)")
        return PeopleLine(verb, number, code)
    if not words:
        raise ValueError(f"{verb} needs an email address: {_usage(verb)}")
    email = _email(words[0], verb)
    rest = words[1:]
    if verb is Verb.REMOVE:
        if rest:
            raise ValueError(f"REMOVE takes only the address: {_usage(verb)}")
        return PeopleLine(verb, number, code, email)
    role, rest = _role(rest, verb)
    if verb is Verb.ROLE:
        if rest:
            raise ValueError(f"ROLE takes the address and the role only: {_usage(verb)}")
        return PeopleLine(verb, number, code, email, role)
    name = " ".join(rest) or None
    if name is not None and (len(name) > MAX_NAME_CHARS or not name.isprintable()):
        raise ValueError(f"give a name of at most {MAX_NAME_CHARS} plain characters")
    return PeopleLine(verb, number, code, email, role, name)


def _email(word: str, verb: Verb) -> str:
    match = _EMAIL.match(word)
    if match is None:
        raise ValueError(f"{word!r} is not an email address: {_usage(verb)}")
    return match["email"].lower()


def _role(words: list[str], verb: Verb) -> tuple[Role, list[str]]:
    """The role the words start with (one or two words), and the rest."""
    for size in (2, 1):
        written = " ".join(words[:size]).lower().rstrip(":,")
        if len(words) >= size and written in _WORD_TO_ROLE:
            return _WORD_TO_ROLE[written], words[size:]
    found = repr(words[0]) if words else "no role"
    raise ValueError(f"{found} is not a role ({_ROLE_HELP}): {_usage(verb)}")


def _usage(verb: Verb) -> str:
    return {
        Verb.ADD: "ADD ADDRESS ROLE NAME",
        Verb.REMOVE: "REMOVE ADDRESS",
        Verb.ROLE: "ROLE ADDRESS ROLE",
        Verb.LIST: "LIST",
    }[verb]
