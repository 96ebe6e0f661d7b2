"""What the person wrote in a reply, with the quoted original and signatures
cut away.

People answer an alert by replying from Outlook, Gmail, Apple Mail, phones
and so on.  ``written_text`` takes the parsed reply and returns only the lines
the person typed, ready for :func:`mailflow.mail.reply_form.parse_reply`.

Library choice: written with the standard library only.  Of the candidates,
talon is unmaintained and pulls in numpy/scipy/scikit-learn/lxml, and
email-reply-parser and mail-parser-reply work on plain text only and both fail
this project's reply corpus (Android's Russian attribution, Thunderbird's
bottom post); for HTML see :mod:`mailflow.mail.reply_html`.

How it works:

1. The body: the first text/plain part (not an attachment, not inside an
   attached message), else the first text/html part turned into text.  Parts
   are walked without recursion and at most ``MAX_PARTS`` of them; a part that
   cannot be decoded is skipped; an unknown charset is read as UTF-8 with
   replacement characters; at most ``MAX_CHARS`` characters are considered.
2. For HTML (:mod:`mailflow.mail.reply_html`) the quote containers are
   removed before the markup becomes text: every ``<blockquote>``, Gmail's
   ``gmail_quote``, Thunderbird's ``moz-cite-prefix``, Yahoo's and Proton's
   quote divs; Outlook web's ``#appendonsend`` / ``#divRplyFwdMsg`` or
   Hotmail's ``#stopSpelling`` start the original.  ``<head>``, ``<style>``,
   ``<script>`` and signatures marked as such (``gmail_signature``,
   ``moz-signature``) are dropped; ``<br>``, ``<p>``, ``<div>`` and the other
   blocks become line breaks.
3. In the text: lines quoted with ``>`` are dropped, with the attribution above
   them (``On <date>, <name> wrote:``, also wrapped over two lines and in other
   languages, or ``<date>, <name> <address>:``); text below them is kept.  An
   original quoted without ``>`` starts at an Outlook header block (``From: /
   Sent: / To: / Subject:``, also localised, with the ``____`` line above
   it), an ``-----Original Message-----`` line, an attribution followed by
   unmarked text, or Outlook web's reply header; it runs to the end, unless
   it is a copy of one of our own emails: then the text below its footer
   ("You receive this because ...", "This message was sent automatically
   by ...") is the person's again, for those who write below the alert.
   After a ``-- `` delimiter, lines are a signature, up to such an original.
   "Sent from my iPhone"-style lines are dropped.
4. ``reply_subject``: what the person wrote in the Subject, without "Re:"
   prefixes, tags and the words of our own subject, for the reply form to
   read when the body holds no answer.
"""

from __future__ import annotations

import bisect
import re
from email.message import EmailMessage, Message

from mailflow.mail.reply_html import CUT_MARK, QUOTE_MARK, html_to_text

__all__ = ["MAX_CHARS", "MAX_PARTS", "reply_subject", "subject_of", "written_text"]

#: The most characters of a body that are looked at.
MAX_CHARS = 1_000_000
#: The most MIME parts that are looked at (a guard against absurd messages).
MAX_PARTS = 20_000


# Longer lines are never attributions, header lines or separators.
_LONGEST_SPECIAL_LINE = 500


def written_text(message: EmailMessage) -> str:
    """The text the person wrote in ``message``, without the quoted original,
    device signatures ("Sent from my iPhone") or a ``-- `` signature.
    Returns "" when there is no readable text body; never raises for a
    malformed, oversized or oddly encoded message."""
    plain, html_body = _find_bodies(message)
    if plain is not None and plain.strip():
        text = plain
    elif html_body is not None:
        text = html_to_text(html_body)
    else:
        return ""
    return _cut_quoted(text)


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


# ------------------------------------------------------------------ MIME


def _find_bodies(message: Message) -> tuple[str | None, str | None]:
    """The first text/plain and the first text/html body, decoded, walking
    the parts in order without recursion."""
    plain: str | None = None
    html_body: str | None = None
    stack: list[Message] = [message]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        try:
            if part.get_content_maintype() == "message":
                continue  # an attached or forwarded message is not the reply
            if part.is_multipart():
                children = part.get_payload()
                if isinstance(children, list):
                    stack.extend(
                        child for child in reversed(children) if isinstance(child, Message)
                    )
                continue
            if part.get_content_disposition() == "attachment":
                continue
            content_type = part.get_content_type()
            if content_type == "text/plain" and plain is None:
                plain = _decode_part(part)
                if plain is not None and _param(part, "format") == "flowed":
                    plain = _unflow(plain, delsp=_param(part, "delsp") == "yes")
                if plain is not None and plain.strip():
                    break
            elif content_type == "text/html" and html_body is None:
                html_body = _decode_part(part)
        except Exception:  # noqa: S112 - a part that cannot be read is skipped
            continue
    return plain, html_body


def _param(part: Message, name: str) -> str:
    value = part.get_param(name)
    return value.strip().lower() if isinstance(value, str) else ""


def _decode_part(part: Message) -> str | None:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    # UTF-8 takes at most four bytes a character.
    payload = payload[: MAX_CHARS * 4]
    charset = part.get_content_charset() or "utf-8"
    if charset in ("us-ascii", "ascii"):
        charset = "utf-8"  # 8-bit text labelled ASCII is nearly always UTF-8
    try:
        # A codec that is not a text encoding (zlib, base64) raises LookupError.
        text = payload.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        text = payload.decode("utf-8", "replace")
    text = text[:MAX_CHARS].replace("\x00", "")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _unflow(text: str, *, delsp: bool) -> str:
    """Join the soft line breaks of format=flowed text (RFC 3676) outside
    quoted lines, so an answer wrapped by the mail client is one line again."""
    out: list[str] = []
    pending: list[str] = []
    for line in text.split("\n"):
        if line.startswith(">"):
            if pending:
                out.append("".join(pending))
                pending = []
            out.append(line)
            continue
        if line.startswith(" "):
            line = line[1:]  # space-stuffing
        if line.endswith(" ") and line != "-- ":
            pending.append(line[:-1] if delsp else line)
            continue
        pending.append(line)
        out.append("".join(pending))
        pending = []
    if pending:
        out.append("".join(pending))
    return "\n".join(out)


# ------------------------------------------------------------------ text

_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff"))

# Outlook's header block, in the languages NHS and European clients use.
_HEADER_KINDS: dict[str, str] = {}
for _kind, _words in {
    "from": (
        "from von van de da från fra od от lähettäjä feladó kimden expéditeur remitente "
        "发件人 寄件者 差出人"
    ),
    "date": (
        "sent date datum gesendet verzonden envoyé enviado inviato skickat sendt wysłano "
        "отправлено дата lähetetty elküldve gönderildi data fecha 发送时间 日付 送信日時"
    ),
    "to": "to an aan à a para till til do кому vastaanottaja címzett kime 收件人 宛先",
    "cc": "cc kopie copie kopia копия",
    "subject": (
        "subject betreff onderwerp objet asunto oggetto ämne emne temat тема aihe tárgy "
        "konu assunto 主题 件名"
    ),
}.items():
    _HEADER_KINDS.update(dict.fromkeys(_words.split(), _kind))
_HEADER_LINE = re.compile(r"^\*{0,2}([^\W\d_]+)\*{0,2}\s*[:\uff1a]", re.IGNORECASE)
_ORIGINAL_MESSAGE = re.compile(
    r"^-{2,}\s*(?:original message|ursprüngliche nachricht|message d'origine|mensaje original|"
    r"messaggio originale|oorspronkelijk bericht|originalmeddelande|oprindelig meddelelse|"
    r"opprinnelig melding|wiadomość oryginalna|исходное сообщение|alkuperäinen viesti|"
    r"původní zpráva|forwarded message|weitergeleitete nachricht)\s*-{2,}$"
    r"|^begin forwarded message:$",
    re.IGNORECASE,
)
_WROTE = (
    r"(?:wrote|a écrit|schrieb|escribió|escreveu|ha scritto|scrisse|schreef|skrev|"
    r"napisał\(a\)|napisała|napisał|написал\(а\)|написала|написал|kirjoitti|írta|yazdı|"  # noqa: RUF001
    r"napsal\(a\)|napsal|έγραψε|写道|寫道)"
)
# "On <date>, <name> wrote:", "Am <date> schrieb <name>:", "<date> <name> написал:":
# a line that starts like this and ends like that.
_ATTRIBUTION_START = re.compile(
    r"(?:on|am|le|el|il|op|den|på|em|dne|w dniu|в|στις|在)\s|\d", re.IGNORECASE
)
_ATTRIBUTION_END = re.compile(rf"{_WROTE}(?:\s[^:\uff1a]{{0,120}})?\s*[:\uff1a]$", re.IGNORECASE)
_DIGIT = re.compile(r"\d")
_DATE_OR_TIME = re.compile(r"\d{1,2}:\d{2}|\b(?:19|20)\d{2}\b")
_COLONS = (":", "\uff1a")
# The last lines of every email mailflow sends (text and HTML): below a
# copy of one quoted without ">" markers, the person may have written.
_OUR_FOOTER = re.compile(
    r"^(?:You receive this because you are listed for|This message was sent automatically by) "
)
_SEPARATOR = re.compile(r"^[-_=*~\u2500\u2501]{4,}$")
_TRAILING_LINK = re.compile(r"\s*<https?://[^>]*>$", re.IGNORECASE)
_DEVICE_SIGNATURE = re.compile(
    r"^(?:sent from my [^:]{1,40}"
    r"|sent from (?:outlook|mail for windows|yahoo mail|samsung|proton ?mail)\b[^:]{0,40}"
    r"|get outlook for (?:ios|android)\b[^:]{0,20}"
    r"|von meinem [^:]{1,40} gesendet"
    r"|envoyé de mon [^:]{1,40}"
    r"|enviado desde mi [^:]{1,40}"
    r"|verzonden (?:vanaf|met) mijn [^:]{1,40}"
    r"|inviato da(?:l mio)? [^:]{1,40}"
    r"|skickat från min [^:]{1,40}"
    r"|отправлено с [^:]{1,40}"  # noqa: RUF001
    r")$",
    re.IGNORECASE,
)


def _clean(line: str) -> str:
    if line.isascii():
        return line.strip()
    return line.translate(_INVISIBLE).replace("\xa0", " ").strip()


def _is_quoted(line: str) -> bool:
    return line == QUOTE_MARK or line.lstrip(" \t\xa0").startswith(">")


def _cut_quoted(text: str) -> str:
    lines = text[:MAX_CHARS].replace("\r\n", "\n").replace("\r", "\n").split("\n")
    # Each line cleaned once; None for a line too long to be anything but text.
    cleaned = [_clean(line) if len(line) <= _LONGEST_SPECIAL_LINE else None for line in lines]
    kinds = [_header_kind(clean) for clean in cleaned]
    wrote = [_ends_like_attribution(clean) for clean in cleaned]
    footers = [n for n, clean in enumerate(cleaned) if clean and _OUR_FOOTER.match(clean)]
    kept: list[str] = []
    # After a "-- " delimiter, the lines are the person's signature.
    in_signature = False
    i, count = 0, len(lines)
    while i < count:
        line, clean = lines[i], cleaned[i]
        cut = _quote_starts(line, clean, lines, cleaned, kinds, wrote, i)
        if cut:
            # The original runs to the end, unless it is our own email and
            # the person wrote below it.
            below = _below_our_email(cleaned, footers, i)
            if below is None:
                break
            # The "____" line above Outlook's header block belongs to the quote.
            while kept and _SEPARATOR.match(kept[-1].strip()):
                kept.pop()
            i, in_signature = below, False
            continue
        if _is_quoted(line):
            i += 1
            continue
        if clean == "--":
            in_signature = True
        if in_signature:
            i += 1
            continue
        if not clean:  # blank, or too long to be anything but text
            kept.append(line)
            i += 1
            continue
        length = _attribution_length(cleaned, wrote, i)
        if length:
            i = _next_non_blank(cleaned, i + length)
            continue
        if _is_colon_attribution(clean):
            following = _next_non_blank(cleaned, i + 1)
            if following < count and _is_quoted(lines[following]):
                i = following
                continue
        if _DEVICE_SIGNATURE.match(_TRAILING_LINK.sub("", clean) if ">" in clean else clean):
            i += 1
            continue
        kept.append(line)
        i += 1
    return _tidy(kept)


def _quote_starts(
    line: str,
    clean: str | None,
    lines: list[str],
    cleaned: list[str | None],
    kinds: list[str | None],
    wrote: list[bool],
    i: int,
) -> bool:
    """Whether an original quoted without ">" markers starts at line ``i``."""
    if line == CUT_MARK:
        return True
    if not clean:
        return False
    if clean.startswith(("-", "B", "b")) and _ORIGINAL_MESSAGE.match(clean):
        return True
    if kinds[i] is not None and _starts_header_block(cleaned, kinds, i):
        return True
    length = _attribution_length(cleaned, wrote, i)
    if length:
        following = _next_non_blank(cleaned, i + length)
        return following < len(lines) and not _is_quoted(lines[following])
    return False


def _below_our_email(cleaned: list[str | None], footers: list[int], start: int) -> int | None:
    """Where the text below a quoted copy of one of our own emails starts
    (after its footer), or None when no such footer follows ``start``."""
    found = bisect.bisect_right(footers, start)
    if found == len(footers):
        return None
    # The footer may take several lines: "You receive this ..." and "This
    # message was sent automatically ...".
    while (
        found + 1 < len(footers)
        and _next_non_blank(cleaned, footers[found] + 1) == footers[found + 1]
    ):
        found += 1
    return footers[found] + 1


def _next_non_blank(cleaned: list[str | None], start: int) -> int:
    i = start
    while i < len(cleaned) and cleaned[i] == "":
        i += 1
    return i


def _header_kind(clean: str | None) -> str | None:
    if not clean or (":" not in clean and "\uff1a" not in clean):
        return None
    match = _HEADER_LINE.match(clean)
    return _HEADER_KINDS.get(match.group(1).lower()) if match else None


def _starts_header_block(cleaned: list[str | None], kinds: list[str | None], start: int) -> bool:
    """Whether an Outlook-style header block (From, Sent, To, Subject, in any
    order and language, without ">" markers) starts at ``start``."""
    found: set[str] = set()
    for i in range(start, min(start + 10, len(cleaned))):
        if cleaned[i] == "":
            break
        kind = kinds[i]
        if kind is not None:
            found.add(kind)
    return "from" in found and ("date" in found or len(found) >= 3)


def _is_colon_attribution(clean: str) -> bool:
    """'26.06.2014, 14:41, "Alexander L" <abc@example.com>:' (a date and an
    address, ending with a colon); only counted when quoted lines follow."""
    return clean.endswith(_COLONS) and "@" in clean and _DIGIT.search(clean) is not None


def _ends_like_attribution(clean: str | None) -> bool:
    if not clean or not clean.endswith(_COLONS):
        return False
    return _ATTRIBUTION_END.search(clean) is not None


def _attribution_length(cleaned: list[str | None], wrote: list[bool], start: int) -> int:
    """How many lines (0, 1 or 2) an "On <date>, <name> wrote:" line takes;
    ``wrote`` says which lines end like one."""
    first = cleaned[start]
    if not first or not _ATTRIBUTION_START.match(first):
        return 0
    if wrote[start]:
        return 1
    if start + 1 >= len(cleaned) or not wrote[start + 1]:
        return 0
    second = cleaned[start + 1]
    if second and _ATTRIBUTION_START.match(second):
        return 0  # that line is an attribution of its own
    if _DATE_OR_TIME.search(f"{first} {second}"):
        return 2
    return 0


def _tidy(lines: list[str]) -> str:
    out: list[str] = []
    for line in lines:
        if not line.isascii():
            line = line.translate(_INVISIBLE).replace("\xa0", " ")
        line = line.rstrip()
        if line or (out and out[-1]):
            out.append(line)
    while out and (not out[-1] or _SEPARATOR.match(out[-1].strip())):
        out.pop()
    return "\n".join(out)
