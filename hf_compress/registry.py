"""The one registration pattern behind hf_compress's extension points (recipe stage types, quantized layer kinds,
importance scorers), as PEFT's method registry and torchao's handler table: a name checked against a rule, each
name registered once, and an unknown name answered with the registered ones."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists the registered ones (a KeyError that prints plainly)."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """Names -> specs of one kind of extension.

    what: what a name names, for messages (``"stage"``, ``"quantized kind"``).
    pattern / rule: the regular expression a name must match and the same rule in words.
    unknown: the error class of an unknown name; ``unknown_message(name, registered)`` its message.
    """

    def __init__(self, what: str, pattern: str, rule: str, unknown: type[UnknownNameError],
                 unknown_message: Callable[[object, list[str]], str]) -> None:  # fmt: skip
        self.what, self.rule, self.unknown, self.unknown_message = what, rule, unknown, unknown_message
        self.pattern = re.compile(pattern)
        self.entries: dict[str, T] = {}

    def check_name(self, name: object) -> None:
        if not isinstance(name, str) or not self.pattern.match(name):
            raise ValueError(f"{self.what} name {name!r} is not valid: {self.rule}.")

    def check_new(self, name: object) -> None:
        """A ValueError unless ``name`` is valid and not yet registered (what `add` checks first)."""
        self.check_name(name)
        if name in self.entries:
            raise ValueError(f"{self.what} {name!r} is already registered (registered: {self.names()}).")

    def add(self, name: str, spec: T) -> T:
        """Register ``spec`` under ``name``; a bad or taken name is a ValueError."""
        self.check_new(name)
        self.entries[name] = spec
        return spec

    def get(self, name: object) -> T:
        try:
            return self.entries[name]  # type: ignore[index]
        except (KeyError, TypeError):
            raise self.unknown(self.unknown_message(name, self.names())) from None

    def remove(self, name: str) -> T:
        spec = self.get(name)
        del self.entries[name]
        return spec

    def names(self) -> list[str]:
        return sorted(self.entries)

    def values(self) -> list[T]:
        return list(self.entries.values())
