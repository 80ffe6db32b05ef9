"""structlog set-up: JSON lines off a TTY, console on a TTY, secrets masked by key and by value."""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any, Mapping, MutableMapping

import structlog
import structlog.tracebacks
from structlog.typing import Processor

MASK = "***"
_SECRET_KEYS = re.compile(r"(token|secret|password|passwd|authorization|api_key|client_secret|code)$",
                          re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_known: set[str] = set()
_known_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it appears in a log event, from now on."""
    if value and len(value) >= 4:
        with _known_lock:
            _known.add(value)


def mask_text(text: str) -> str:
    with _known_lock:
        secrets = sorted(_known, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _BEARER.sub(r"\1" + MASK, text)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and _SECRET_KEYS.search(k) and v else _mask(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask(v) for v in value)
    return value


def mask_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """structlog processor; runs last before rendering so tracebacks are masked too."""
    return _mask(event_dict)


class _CurrentStderr:
    """Whatever sys.stderr is at the moment of writing (tests and daemons swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(level: str = "INFO", fmt: str = "auto", stream=None) -> None:
    stream = stream or _CurrentStderr()
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        # Locals of a crashing frame hold connection strings and tokens: never render them.
        no_locals = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        tail: list[Processor] = [structlog.processors.ExceptionRenderer(no_locals), mask_secrets,
                structlog.processors.JSONRenderer(ensure_ascii=False)]
    else:
        tail = [structlog.processors.format_exc_info, mask_secrets,
                structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)]
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *tail],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(shared, tail, stream)


class _OurHandler(logging.StreamHandler):
    """The root handler ``configure`` installs: marked, so that a second call replaces it."""

    _amo1c = True


def _route_stdlib(shared: list, tail: list, stream) -> None:
    """Libraries log through the standard library (APScheduler, waitress, alembic, urllib3): their
    records are rendered by the same processors, so every line is JSON off a TTY and masked.
    Only warnings and worse: request lines could carry tokens."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name,
                           structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail])
    handler = _OurHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_amo1c", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for noisy in ("werkzeug", "alembic", "waitress", "apscheduler", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
