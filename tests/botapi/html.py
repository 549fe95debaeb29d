"""Telegram's `parse_mode=HTML`, as the Bot API server applies it.

The parser walks the UTF-8 bytes like tdlib's `parse_html` so that refusals carry the same
wording and byte offsets Telegram reports ("Unsupported start tag \"br\" at byte offset 0").
One deliberate difference: tdlib keeps an unknown `&name;` or a bare `&` as literal text,
while this parser refuses every entity other than `&lt;` `&gt;` `&amp;` `&quot;` and numeric
ones, so text the bot forgot to escape fails here instead of rendering garbled in production.

Entity offsets and lengths are in UTF-16 code units, as the Bot API reports them; the message
length limits count code points of the text left after the tags are stripped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Tags Telegram accepts; anything else is "Unsupported start tag".
ALLOWED_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "tg-emoji",
        "code",
        "pre",
        "blockquote",
    }
)

_SIMPLE_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
}

_NAMED_ENTITIES = {b"lt": "<", b"gt": ">", b"amp": "&", b"quot": '"'}
_SPACES = frozenset(b" \t\r\n\x0b\x0c")
_NAME_TOKEN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")


class HtmlParseError(ValueError):
    """The text is not valid Telegram HTML; the message is what follows "can't parse entities: "."""


@dataclass(frozen=True)
class FormattedText:
    """Plain text plus its Bot API `MessageEntity` dicts."""

    text: str
    entities: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _OpenTag:
    name: str
    argument: str
    utf16_start: int
    byte_offset: int


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, the unit of Bot API entity offsets."""
    return len(text.encode("utf-16-le")) // 2


class _Parser:
    def __init__(self, source: str) -> None:
        self.data = source.encode("utf-8")
        self.pos = 0
        self.out: list[str] = []
        self.utf16 = 0
        self.open: list[_OpenTag] = []
        self.entities: list[dict[str, Any]] = []

    def at(self, index: int) -> int:
        """The byte at `index`, or 0 past the end (tdlib reads a NUL-terminated string)."""
        return self.data[index] if index < len(self.data) else 0

    def emit(self, text: str) -> None:
        self.out.append(text)
        self.utf16 += utf16_length(text)

    def parse(self) -> FormattedText:
        size = len(self.data)
        while self.pos < size:
            byte = self.data[self.pos]
            if byte == ord("&"):
                self.emit(self.entity())
            elif byte == ord("<"):
                if self.at(self.pos + 1) == ord("/"):
                    self.end_tag()
                else:
                    self.start_tag()
            else:
                end = self.pos + 1
                while end < size and self.data[end] not in (ord("&"), ord("<")):
                    end += 1
                self.emit(self.data[self.pos : end].decode("utf-8"))
                self.pos = end
        if self.open:
            raise HtmlParseError(
                f'Can\'t find end tag corresponding to start tag "{self.open[-1].name}"'
            )
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        return FormattedText("".join(self.out), self.entities)

    def entity(self) -> str:
        begin = self.pos
        end = begin + 1
        if self.at(end) == ord("#"):
            end += 1
            hexadecimal = self.at(end) in (ord("x"), ord("X"))
            if hexadecimal:
                end += 1
            digits_start = end
            allowed = _HEX if hexadecimal else _DIGITS
            while self.at(end) in allowed:
                end += 1
            digits = self.data[digits_start:end]
            code = int(digits, 16 if hexadecimal else 10) if digits else 0
            if self.at(end) == ord(";") and 0 < code <= 0x10FFFF:
                if 0xD800 <= code <= 0xDFFF:
                    raise HtmlParseError(
                        "Text contains invalid Unicode characters after decoding HTML "
                        "entities, check for unmatched surrogate code units"
                    )
                self.pos = end + 1
                return chr(code)
        else:
            while chr(self.at(end)).isascii() and chr(self.at(end)).isalpha():
                end += 1
            name = self.data[begin + 1 : end]
            if self.at(end) == ord(";") and name in _NAMED_ENTITIES:
                self.pos = end + 1
                return _NAMED_ENTITIES[name]
        shown = self.data[begin : end + 1].decode("utf-8", "replace")
        raise HtmlParseError(
            f'Unsupported HTML entity "{shown}" at byte offset {begin}; '
            "escape & as &amp;, < as &lt; and > as &gt;"
        )

    def skip_spaces(self) -> None:
        while self.at(self.pos) in _SPACES:
            self.pos += 1

    def start_tag(self) -> None:
        begin = self.pos
        self.pos += 1
        while self.at(self.pos) not in _SPACES and self.at(self.pos) not in (0, ord(">")):
            self.pos += 1
        if self.at(self.pos) == 0:
            raise HtmlParseError(f"Unclosed start tag at byte offset {begin}")
        name = self.data[begin + 1 : self.pos].decode("utf-8", "replace").lower()
        if name not in ALLOWED_TAGS:
            raise HtmlParseError(f'Unsupported start tag "{name}" at byte offset {begin}')
        argument = self.attributes(name, begin)
        self.pos += 1  # the closing ">"
        if name == "span" and argument != "tg-spoiler":
            raise HtmlParseError(f'Tag "span" must have class "tg-spoiler" at byte offset {begin}')
        self.open.append(_OpenTag(name, argument, self.utf16, begin))

    def attributes(self, tag: str, begin: int) -> str:
        """Reads the attributes up to ">" and returns the one that matters for `tag`."""
        argument = ""
        while True:
            self.skip_spaces()
            if self.at(self.pos) == ord(">"):
                return argument
            if self.at(self.pos) == 0:
                raise HtmlParseError(f"Unclosed start tag at byte offset {begin}")
            name_begin = self.pos
            while self.at(self.pos) not in _SPACES and self.at(self.pos) not in (0, ord("=")):
                if self.at(self.pos) == ord(">"):
                    break
                self.pos += 1
            attribute = self.data[name_begin : self.pos].decode("utf-8", "replace").lower()
            if not attribute:
                raise HtmlParseError(
                    f'Empty attribute name in the tag "{tag}" at byte offset {name_begin}'
                )
            self.skip_spaces()
            if self.at(self.pos) != ord("="):
                if tag == "blockquote" and attribute == "expandable":
                    argument = "expandable"
                    continue
                raise HtmlParseError(
                    f'Expected equal sign in declaration of an attribute of the tag "{tag}" '
                    f"at byte offset {name_begin}"
                )
            self.pos += 1
            self.skip_spaces()
            if self.at(self.pos) == 0:
                raise HtmlParseError(f'Unclosed start tag "{tag}" at byte offset {begin}')
            value = self.attribute_value(begin)
            if (
                (tag == "a" and attribute == "href")
                or (tag == "span" and attribute == "class")
                or (tag == "tg-emoji" and attribute == "emoji-id")
            ):
                argument = value
            elif tag == "code" and attribute == "class" and value.startswith("language-"):
                argument = value.removeprefix("language-")

    def attribute_value(self, begin: int) -> str:
        quote = self.at(self.pos)
        if quote not in (ord('"'), ord("'")):
            token_begin = self.pos
            while self.at(self.pos) in _NAME_TOKEN:
                self.pos += 1
            if self.at(self.pos) not in _SPACES and self.at(self.pos) != ord(">"):
                raise HtmlParseError(f"Unexpected end of name token at byte offset {token_begin}")
            return self.data[token_begin : self.pos].decode("utf-8").lower()
        self.pos += 1
        parts: list[str] = []
        while self.at(self.pos) not in (0, quote):
            if self.at(self.pos) == ord("&"):
                parts.append(self.entity())
                continue
            end = self.pos + 1
            while self.at(end) not in (0, quote, ord("&")):
                end += 1
            parts.append(self.data[self.pos : end].decode("utf-8"))
            self.pos = end
        if self.at(self.pos) == 0:
            raise HtmlParseError(f"Unclosed start tag at byte offset {begin}")
        self.pos += 1
        return "".join(parts)

    def end_tag(self) -> None:
        begin = self.pos
        if not self.open:
            raise HtmlParseError(f"Unexpected end tag at byte offset {begin}")
        self.pos += 2
        while self.at(self.pos) not in _SPACES and self.at(self.pos) not in (0, ord(">")):
            self.pos += 1
        name = self.data[begin + 2 : self.pos].decode("utf-8", "replace").lower()
        self.skip_spaces()
        if self.at(self.pos) != ord(">"):
            raise HtmlParseError(f"Unclosed end tag at byte offset {begin}")
        self.pos += 1
        tag = self.open.pop()
        if name and name != tag.name:
            raise HtmlParseError(
                f'Unmatched end tag at byte offset {begin}, expected "</{tag.name}>", '
                f'found "</{name}>"'
            )
        self.close(tag)

    def close(self, tag: _OpenTag) -> None:
        length = self.utf16 - tag.utf16_start
        if length == 0:
            return
        entity: dict[str, Any] = {"offset": tag.utf16_start, "length": length}
        if tag.name in _SIMPLE_ENTITY_TYPES:
            entity["type"] = _SIMPLE_ENTITY_TYPES[tag.name]
        elif tag.name == "a":
            if not tag.argument:
                return
            entity.update(type="text_link", url=tag.argument)
        elif tag.name == "tg-emoji":
            entity.update(type="custom_emoji", custom_emoji_id=tag.argument)
        elif tag.name == "blockquote":
            entity["type"] = "expandable_blockquote" if tag.argument else "blockquote"
        elif tag.name == "code":
            entity["type"] = "code"
            if tag.argument:
                entity["language"] = tag.argument
        else:  # pre, possibly wrapping <code class="language-...">
            entity["type"] = "pre"
            last = self.entities[-1] if self.entities else None
            if (
                last is not None
                and last["type"] == "code"
                and (last["offset"], last["length"]) == (tag.utf16_start, length)
            ):
                self.entities.pop()
                if "language" in last:
                    entity["language"] = last["language"]
        self.entities.append(entity)


def parse_html(source: str) -> FormattedText:
    """Strips Telegram HTML to plain text and entities, or raises `HtmlParseError`."""
    return _Parser(source).parse()


def trim(formatted: FormattedText) -> FormattedText:
    """Drops leading and trailing whitespace as Telegram does, moving entities to match."""
    text = formatted.text
    stripped = text.strip()
    if stripped == text:
        return formatted
    shift = utf16_length(text[: len(text) - len(text.lstrip())])
    limit = utf16_length(stripped)
    entities: list[dict[str, Any]] = []
    for entity in formatted.entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, limit)
        if end > start:
            entities.append({**entity, "offset": start, "length": end - start})
    return FormattedText(stripped, entities)
