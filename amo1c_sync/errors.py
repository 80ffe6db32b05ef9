"""Exceptions named by what the caller should do, not by what went wrong."""

from __future__ import annotations


class Amo1cError(Exception):
    """Base class. ``str(exc)`` is a message for a person and never holds a secret."""


class ConfigError(Amo1cError):
    """sync.ini (or an environment override) is wrong; nothing starts until it is fixed."""


class RetriableError(Amo1cError):
    """A passing fault (timeout, 5xx, 429, dropped connection): try again later with backoff."""


def origin_code(origin: str, code: object) -> str:
    """``origin:code`` (``amocrm:NotSupportedChoice``, ``1c:14``, ``http:400``), so that a code
    read in `status` or the journal says which system gave it; a code that has one is kept."""
    text = str(code)
    return text if ":" in text else f"{origin}:{text}"


class ItemError(Amo1cError):
    """This one lead or document cannot succeed as it is: record it, show it, go on with the
    others, and try it again only once the lead or the document changed. ``code`` names its
    origin (``origin_code``) when the raiser gave one."""

    def __init__(self, message: str, *, item: str | None = None, code: str | None = None,
                 origin: str | None = None):
        super().__init__(message)
        self.item = item
        self.code = origin_code(origin, code) if origin and code is not None else code


class FatalError(Amo1cError):
    """Stop all work against this system until a person acts (revoked token, 403 block, bad login)."""

    def __init__(self, message: str, *, system: str | None = None, action: str | None = None):
        super().__init__(message)
        self.system = system
        self.action = action
