"""Typed callback data: our own small codec, because a button's data comes back untrusted.

Anyone can send any `callback_data` string to the bot, so `unpack` treats it like form
input: the prefix must be known, the field count exact, every value in its one canonical
spelling (re-packing must give back the same string), every number within what an
INTEGER column holds on PostgreSQL (0 to 2**31-1: they are ids, pages, quantities) and
every text printable, without U+FFFD (what the edge put in place of a NUL or a lone
surrogate). Anything else is `BadCallbackError`, which the framework answers with a
polite "this button is no longer valid" and no change. Telegram caps callback data at
64 bytes, checked on `pack`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from core.text import INTEGER_MAX

#: Telegram's limit for `callback_data`, in bytes of UTF-8.
MAX_CALLBACK_BYTES = 64
SEPARATOR = ":"
PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,15}")


class BadCallbackError(ValueError):
    """Callback data that is not one of ours (forged, stale or truncated)."""


class Callback(BaseModel):
    """Base of every callback data class: declare `prefix` and the fields, in order.

    Fields may be `int` (0 to INTEGER_MAX: they are ids, pages, quantities), `str` (printable,
    no `:`), `bool`, a `Literal`/`StrEnum` of strings, or any of these `| None`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: ClassVar[str]
    _by_prefix: ClassVar[dict[str, type[Callback]]] = {}
    _by_name: ClassVar[dict[str, type[Callback]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register the class, refusing a prefix or a class name another class already has.

        Two classes on one prefix would route each other's buttons; two classes of one name
        make logs, errors and imports ambiguous (`from … import ProductCallback` picks one
        silently). Only the same definition run again (same module and name, as a module
        reload does) may take its own place back.
        """
        super().__init_subclass__(**kwargs)
        prefix = cls.__dict__.get("prefix")
        if prefix is None:
            return
        if not PREFIX_PATTERN.fullmatch(prefix):
            raise TypeError(f"callback prefix {prefix!r} must match {PREFIX_PATTERN.pattern}")
        by_prefix = Callback._by_prefix.get(prefix)
        if by_prefix is not None and not _same_definition(by_prefix, cls):
            raise TypeError(f"callback prefix {prefix!r} already used by {_where(by_prefix)}")
        by_name = Callback._by_name.get(cls.__name__)
        if by_name is not None and not _same_definition(by_name, cls):
            raise TypeError(
                f"callback class name {cls.__name__!r} already used by {_where(by_name)}"
            )
        if by_name is not None and by_name.prefix != prefix:
            del Callback._by_prefix[by_name.prefix]
        Callback._by_prefix[prefix] = cls
        Callback._by_name[cls.__name__] = cls

    @model_validator(mode="after")
    def _values_in_range(self) -> Self:
        for name, value in self:
            if isinstance(value, int) and not isinstance(value, bool):
                if value < 0:
                    raise ValueError(f"{name} must not be negative")
                if value > INTEGER_MAX:
                    raise ValueError(f"{name} is over {INTEGER_MAX}")
            elif isinstance(value, str) and (not value.isprintable() or "\ufffd" in value):
                raise ValueError(f"{name} is not printable text")
        return self

    def pack(self) -> str:
        """`prefix:f1:f2`; raises ValueError when it would not fit Telegram's limit."""
        parts = [self.prefix]
        for name, value in self:
            text = _field_text(value)
            if SEPARATOR in text:
                raise ValueError(f"{type(self).__name__}.{name} must not contain {SEPARATOR!r}")
            parts.append(text)
        packed = SEPARATOR.join(parts)
        if len(packed.encode()) > MAX_CALLBACK_BYTES:
            raise ValueError(f"callback data over {MAX_CALLBACK_BYTES} bytes: {packed!r}")
        return packed

    @classmethod
    def unpack(cls, raw: str) -> Self:
        """Parse untrusted data for this class, or raise BadCallbackError."""
        try:
            size = len(raw.encode())
        except UnicodeEncodeError:
            raise BadCallbackError("not valid UTF-8 (a lone surrogate)") from None
        if size > MAX_CALLBACK_BYTES:
            raise BadCallbackError("too long")
        prefix, *values = raw.split(SEPARATOR)
        if prefix != cls.prefix:
            raise BadCallbackError(f"prefix {prefix!r} is not {cls.prefix!r}")
        names = list(cls.model_fields)
        if len(values) != len(names):
            raise BadCallbackError(
                f"{len(values)} fields for {cls.__name__}, expected {len(names)}"
            )
        fields = {
            name: (value if value != "" else None)
            for name, value in zip(names, values, strict=True)
        }
        try:
            parsed = cls.model_validate(fields)
            canonical = parsed.pack()
        except (ValidationError, ValueError) as exc:
            raise BadCallbackError(str(exc)) from None
        if canonical != raw:
            raise BadCallbackError(f"{raw!r} is not in canonical form")
        return parsed

    @staticmethod
    def prefix_of(raw: str) -> str:
        return raw.split(SEPARATOR, 1)[0]


def _same_definition(known: type[Callback], new: type[Callback]) -> bool:
    return (known.__module__, known.__qualname__) == (new.__module__, new.__qualname__)


def _where(cls: type[Callback]) -> str:
    return f"{cls.__module__}.{cls.__qualname__} (prefix {cls.prefix!r})"


def _field_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
