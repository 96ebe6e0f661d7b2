"""HTML reply bodies to lines of text, with the quoted original marked.

The stdlib ``html.parser`` of Python 3.11 is quadratic on unclosed tags and
raises on some malformed markup, so this is a small linear tokenizer: every
search starts where the last one ended, whatever the markup holds.  Quote
containers (``<blockquote>``, Gmail's, Thunderbird's, Yahoo's and Proton's
quote divs) become a ``QUOTE_MARK`` line; Outlook web's and Hotmail's reply
headers a ``CUT_MARK`` line, after which the original follows.
"""

from __future__ import annotations

import html
import re

__all__ = ["CUT_MARK", "QUOTE_MARK", "html_to_text"]

# Lines put where a quote container was removed, or where everything that
# follows is quoted.  NUL never survives from the input.
QUOTE_MARK = "\x00quote\x00"
CUT_MARK = "\x00cut\x00"


_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param"}
    | {"source", "track", "wbr"}
)
_BLOCK = frozenset(
    {"address", "article", "aside", "blockquote", "caption", "center", "dd", "div", "dl"}
    | {"dt", "fieldset", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6"}
    | {"header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody"}
    | {"tfoot", "thead", "tr", "ul"}
)
_RAW_TEXT = {
    name: re.compile(rf"</{name}\b", re.IGNORECASE) for name in ("script", "style", "title")
}
_HIDDEN = frozenset({"head", "template", "xml"})
_QUOTE_CLASSES = frozenset(
    {"gmail_quote", "gmail_quote_container", "moz-cite-prefix", "yahoo_quoted", "protonmail_quote"}
)
# The person's own signature, where the client marks it.
_SIGNATURE_CLASSES = frozenset({"gmail_signature", "moz-signature"})
# Everything from an element with one of these ids to the end is quoted.
_CUT_IDS = frozenset(
    {"appendonsend", "divrplyfwdmsg", "stopspelling", "mail-editor-reference-message-container"}
)
_TAG_NAME = re.compile(r"[A-Za-z][^\s/>]*")
# An unclosed quote runs to the end of the tag, which keeps this linear.
_ATTRIBUTE = re.compile(r"""([^\s"'=<>/]+)(?:\s*=\s*(?:"([^"]*)"?|'([^']*)'?|([^\s"'>]+)))?""")
_SPACES = re.compile(r"[ \t\n\r\f]+")
_RUNS_OF_SPACES = re.compile(r" {2,}")
# Where markup starts: a comment, a tag, an end tag, <!...> or <?...>.
_MARKUP_START = re.compile(r"<(?:!--|[A-Za-z/!?])")


class _HtmlText:
    """Markup to lines of text, in one pass over the input."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._line: list[str] = []
        self._line_has_text = False
        self._pre = 0
        self._skip_tag: str | None = None
        self._skip_depth = 0

    # -- output

    def _flush(self) -> None:
        line = "".join(self._line)
        if not self._pre:
            if "  " in line:
                line = _RUNS_OF_SPACES.sub(" ", line)
            line = line.strip(" ")
        self.lines.append(line)
        self._line = []
        self._line_has_text = False

    def soft_break(self) -> None:
        """End the line unless it holds nothing but the spaces between tags."""
        if self._line_has_text:
            self._flush()
        elif not self._pre:
            self._line = []

    def hard_break(self) -> None:
        self._flush()

    def mark(self, marker: str) -> None:
        self.soft_break()
        self.lines.append(marker)

    def data(self, raw: str) -> None:
        if self._skip_tag is not None or not raw:
            return
        text = html.unescape(raw) if "&" in raw else raw
        if self._pre:
            first, *rest = text.replace("\r\n", "\n").split("\n")
            self._append(first)
            for piece in rest:
                self.hard_break()
                self._append(piece)
        else:
            self._append(_SPACES.sub(" ", text))

    def _append(self, text: str) -> None:
        self._line.append(text)
        if not self._line_has_text and text.strip(" "):
            self._line_has_text = True

    # -- tags

    def tag(self, inside: str) -> str | None:
        """Handle a tag (the text between < and >); returns the name of an
        opened element."""
        closing = inside.startswith("/")
        match = _TAG_NAME.match(inside, 1 if closing else 0)
        if match is None:
            return None
        name = match.group(0).lower()
        self_closing = inside.endswith("/")
        if self._skip_tag is not None:
            self._skip(name, closing=closing, self_closing=self_closing)
        elif closing:
            if name in _BLOCK:
                self.soft_break()
            if name == "pre" and self._pre:
                self._pre -= 1
        elif name == "br":
            self.hard_break()
        else:
            self._open(name, inside[match.end() :], self_closing)
        return None if closing or self_closing else name

    def _open(self, name: str, attributes: str, self_closing: bool) -> None:
        classes, element_id = _class_and_id(attributes) if attributes else _NO_ATTRIBUTES
        if element_id in _CUT_IDS:
            # The original follows; the person may still write below it.
            self.mark(CUT_MARK)
        elif name == "blockquote" or not classes.isdisjoint(_QUOTE_CLASSES):
            self.mark(QUOTE_MARK)
            self._start_skip(name, self_closing)
        elif name in _HIDDEN or not classes.isdisjoint(_SIGNATURE_CLASSES):
            self.soft_break()
            self._start_skip(name, self_closing)
        elif name in _BLOCK:
            self.soft_break()
            if name == "pre":
                self._pre += 1
        elif name in ("td", "th"):
            self._line.append(" ")

    def _start_skip(self, name: str, self_closing: bool) -> None:
        if name not in _VOID and not self_closing:
            self._skip_tag = name
            self._skip_depth = 1

    def _skip(self, name: str, *, closing: bool, self_closing: bool) -> None:
        if name == "body" and self._skip_tag == "head" and not closing:
            self._skip_tag = None  # a head that is never closed
        elif name == self._skip_tag:
            if closing:
                self._skip_depth -= 1
                if self._skip_depth == 0:
                    self._skip_tag = None
            elif not self_closing:
                self._skip_depth += 1


_NO_ATTRIBUTES: tuple[frozenset[str], str] = (frozenset(), "")


def _class_and_id(attributes: str) -> tuple[frozenset[str], str]:
    classes: frozenset[str] = frozenset()
    element_id = ""
    lowered = attributes.lower()
    if "class" not in lowered and "id" not in lowered:
        return classes, element_id
    for match in _ATTRIBUTE.finditer(lowered):
        value = next((v for v in match.groups()[1:] if v is not None), "")
        if match.group(1) == "class":
            classes = frozenset(value.split())
        elif match.group(1) == "id":
            element_id = value.strip()
    return classes, element_id


def html_to_text(markup: str) -> str:
    """Text of ``markup`` with quote containers replaced by marker lines.
    Every search starts where the last one ended, or ends the scan, so the
    time is linear in the length of the markup, whatever it contains."""
    out = _HtmlText()
    i, end = 0, len(markup)
    while i < end:
        start = _MARKUP_START.search(markup, i)
        if start is None:
            out.data(markup[i:])
            break
        lt = start.start()
        if lt > i:
            out.data(markup[i:lt])
        if start.group(0) == "<!--":
            close = markup.find("-->", lt + 4)
            if close < 0:
                break  # a comment left open runs to the end
            i = close + 3
            continue
        gt = markup.find(">", lt + 1)
        if gt < 0:
            break  # a tag left open at the end
        i = gt + 1
        if start.group(0) in ("<!", "<?"):
            continue  # doctype, processing instruction, CDATA
        opened = out.tag(markup[lt + 1 : gt].strip())
        raw_end = _RAW_TEXT.get(opened) if opened else None
        if raw_end is not None:
            found = raw_end.search(markup, i)
            if found is None:
                break
            i = found.start()
    out.soft_break()
    return "\n".join(out.lines)
