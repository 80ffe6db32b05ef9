"""Turning a body the other side sent (an HTML error page, a proxy's text) into a short line for a
person: no tags, no entities, one line, capped. Used by the gateways' error messages."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_TAG = re.compile(r"<[a-zA-Z!/?]")
_SPACE = re.compile(r"\s+")


class _TextOnly(HTMLParser):
    _SKIP = frozenset({"script", "style", "head"})
    _KEEP_IN_HEAD = frozenset({"title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self._skip.append(tag)
        elif tag in self._KEEP_IN_HEAD and self._skip == ["head"]:
            self._skip.append(tag)  # the <title> is worth showing even though <head> is not
        self.parts.append(" ")

    def handle_endtag(self, tag):
        if self._skip and self._skip[-1] == tag:
            self._skip.pop()
        self.parts.append(" ")

    def handle_data(self, data):
        if not self._skip or self._skip[-1] in self._KEEP_IN_HEAD:
            self.parts.append(data)


def looks_like_markup(text: str) -> bool:
    return bool(_TAG.search(text))


def plain_text(body: bytes | str | None, limit: int = 200) -> str:
    """The readable text of ``body`` on one line: HTML/XML tags and entities removed, whitespace
    collapsed, at most ``limit`` characters (``…`` marks a cut). "" for an empty body."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    if looks_like_markup(text):
        parser = _TextOnly()
        try:
            parser.feed(text)
            parser.close()
            text = "".join(parser.parts)
        except Exception:  # noqa: BLE001 - a broken page: strip what looks like tags
            text = re.sub(r"<[^>]*>?", " ", text)
        text = text.replace("<", "‹").replace(">", "›")  # whatever is left is text, not a tag
    text = _SPACE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[:limit - 1].rstrip() + "…"
    return text
