"""Cutting the quoted original and signatures from the text of a reply.

``cut_quoted`` takes a reply's body as text (plain, or HTML already turned
into text by :mod:`mailflow.gateway.reply_html`, which marks its quotes with
``QUOTE_MARK`` and ``CUT_MARK``) and keeps the lines the person typed.  How
each kind of quote is recognised is step 3 of :mod:`mailflow.gateway.reply_text`.
"""

from __future__ import annotations

import bisect
import re

from mailflow.gateway.reply_html import CUT_MARK, QUOTE_MARK

__all__ = ["cut_quoted"]

# Longer lines are never attributions, header lines or separators.
_LONGEST_SPECIAL_LINE = 500

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


def cut_quoted(text: str) -> str:
    """The lines of ``text`` the person wrote, without quoted originals,
    attributions, a ``-- `` signature or device signatures, trimmed of
    blank lines at either end."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
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
