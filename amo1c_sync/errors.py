"""Exceptions named by what the caller should do, not by what went wrong."""

from __future__ import annotations


class Amo1cError(Exception):
    """Base class. ``str(exc)`` is a message for a person and never holds a secret."""


class ConfigError(Amo1cError):
    """sync.ini (or an environment override) is wrong; nothing starts until it is fixed."""


class RetriableError(Amo1cError):
    """A passing fault (timeout, 5xx, 429, dropped connection): try again later with backoff."""


class ItemError(Amo1cError):
    """This one lead or document cannot be processed as it is; record it, go on with the others."""

    def __init__(self, message: str, *, item: str | None = None, code: str | None = None):
        super().__init__(message)
        self.item = item
        self.code = code


class FatalError(Amo1cError):
    """Stop all work against this system until a person acts (revoked token, 403 block, bad login)."""

    def __init__(self, message: str, *, system: str | None = None, action: str | None = None):
        super().__init__(message)
        self.system = system
        self.action = action
