"""Reading the local maildir that mail goes to on the embedded defaults, so
a person can see the emails (the demo's, say) without a mail client: the
files there are as sent, their bodies quoted-printable or base64.

Reading the folder is ``read_maildir``; everything else works on messages
already read and does no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

from mailflow.core.links import ANSWER_LINK, CONFIRM_LINK, ENROL_LINK
from mailflow.core.mail.messages import AUTO_SUBMITTED_REPLIED

# The headers `mailflow mail show` prints, in this order.
SHOWN_HEADERS = ("Date", "From", "To", "Reply-To", "Subject")
# A URL in plain text ends at white space or at something that cannot be
# part of it; a full stop or comma after it is the sentence's.
URL = re.compile(r"https?://[^\s<>\"'()\[\]]+")
TRAILING_PUNCTUATION = ".,;:!?"
# Far larger than any email mailflow writes: a stray file is not read whole.
MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class StoredEmail:
    """One email in the maildir."""

    path: Path
    message: EmailMessage
    delivered_at: float  # the file's modification time, to order ties

    @property
    def sent_at(self) -> datetime | None:
        try:
            return parsedate_to_datetime(str(self.message["Date"] or ""))
        except (TypeError, ValueError):
            return None

    @property
    def to(self) -> str:
        """The addresses the email is to, without their names."""
        header = self.message["To"]
        addresses = getattr(header, "addresses", ())
        return ", ".join(a.addr_spec for a in addresses) or str(header or "")

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")


@dataclass(frozen=True)
class Link:
    url: str
    label: str | None


class MaildirMissing(Exception):
    """There is no maildir at the path (no mail has been written yet)."""


def read_maildir(path: Path) -> list[StoredEmail]:
    """Every email in ``path``'s new/ and cur/ folders, oldest first (by
    their Date, then by when they were written), so numbers given to them
    stay the same as more arrive."""
    folders = [path / "new", path / "cur"]
    if not any(folder.is_dir() for folder in folders):
        raise MaildirMissing(str(path))
    emails = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for file in folder.iterdir():
            # Maildir readers skip dot files; a folder here is not mail.
            if file.name.startswith(".") or not file.is_file():
                continue
            with file.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES)
            emails.append(StoredEmail(file, parse_email(data), delivered_at=file.stat().st_mtime))
    return sorted(emails, key=_order)


def _order(email: StoredEmail) -> tuple[datetime, float, str]:
    sent = email.sent_at
    if sent is None or sent.tzinfo is None:
        sent = datetime.fromtimestamp(email.delivered_at, UTC)
    return sent, email.delivered_at, email.path.name


def parse_email(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=default)
    assert isinstance(message, EmailMessage)  # the default policy makes one
    return message


def kind_of(message: EmailMessage) -> str:
    """What an email is for, from what it carries: mailflow's emails name
    no kind in their headers, but each kind has its own links."""
    if message["X-Mailflow-Alert"]:
        return "alert"
    paths = {urlsplit(link.url).path for link in links_in(message)}
    for kind, link in (("welcome", ENROL_LINK), ("confirm", CONFIRM_LINK), ("alert", ANSWER_LINK)):
        if any(path.startswith(link.path_prefix) for path in paths):
            return kind
    if str(message["Auto-Submitted"] or "").lower() == AUTO_SUBMITTED_REPLIED:
        return "reply"  # an answer to a person's reply
    return "notice"


def shown_headers(message: EmailMessage) -> list[tuple[str, str]]:
    return [(name, str(message[name])) for name in SHOWN_HEADERS if message[name] is not None]


def plain_text(message: EmailMessage) -> str:
    """The plain-text body, decoded; an email without one says so."""
    body = message.get_body(preferencelist=("plain",))
    if body is None or not isinstance(body, EmailMessage):
        return "(this email has no plain-text part)"
    try:
        content = body.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken encoding
        payload = body.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return str(content)


def links_in(message: EmailMessage) -> list[Link]:
    """Every link in the email, whole, in the order the plain text gives
    them (then any only the HTML has), each labelled where a label can be
    found: the HTML link's aria-label or text, else the words before it on
    its line in the plain text."""
    html_labels = _html_links(message)
    links: dict[str, Link] = {}
    for line in plain_text(message).splitlines():
        for match in URL.finditer(line):
            url = match.group().rstrip(TRAILING_PUNCTUATION)
            # "  Complete: URL" labels it; "- URL" is only a list.
            before = line[: match.start()].strip().rstrip(":").strip(" -*")
            label = html_labels.get(url) or before or None
            links.setdefault(url, Link(url, label))
    for url, label in html_labels.items():
        links.setdefault(url, Link(url, label or None))
    return list(links.values())


def _html_links(message: EmailMessage) -> dict[str, str]:
    body = message.get_body(preferencelist=("html",))
    if body is None or not isinstance(body, EmailMessage):
        return {}
    try:
        html = str(body.get_content())
    except (LookupError, ValueError):
        return {}
    collector = _LinkCollector()
    collector.feed(html)
    collector.close()
    return collector.labels


class _LinkCollector(HTMLParser):
    """The http(s) links of an HTML body with their labels."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.labels: dict[str, str] = {}
        self._open: tuple[str, str | None, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        attributes = dict(attrs)
        href = (attributes.get("href") or "").strip()
        if URL.fullmatch(href):
            self._open = (href, attributes.get("aria-label"), [])

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open[2].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag != "a" or self._open is None:
            return
        href, aria_label, texts = self._open
        self._open = None
        text = " ".join("".join(texts).split())
        label = aria_label or (text if text != href else "")
        self.labels.setdefault(href, label)
