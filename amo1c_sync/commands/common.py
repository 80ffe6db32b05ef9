"""What every command does first: settings, logging, the store."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from amo1c_sync import config, logs
from amo1c_sync.config import Settings
from amo1c_sync.errors import FatalError
from amo1c_sync.store import Store

CREATE_HINT = ("the daemon creates it when it starts; `amo1c-sync db upgrade` creates it now "
               "(check [store] url first if you expected one there)")


class StoreMissing(FatalError):
    """No store yet (or an empty one): normal before the daemon's first start."""


def settings_from(args, *, say_which: bool = False) -> Settings:
    """``say_which``: read-only commands name the config they use on stderr, and say so plainly
    when none was found and the built-in defaults are in force."""
    settings = config.load(getattr(args, "config", None))
    setup_logging(args, settings)
    if say_which:
        if settings.source == "<defaults>":
            looked = ", ".join(str(p) for p in config.DEFAULT_PATHS)
            print(f"config: none found ({looked}); using the built-in defaults — pass --config PATH",
                  file=sys.stderr)
        else:
            print(f"config: {settings.source}", file=sys.stderr)
    return settings


def setup_logging(args, settings: Settings, *, default_level: str | None = None) -> None:
    for secret in settings.secrets():
        logs.register_secret(secret)
    logs.configure(getattr(args, "log_level", None) or default_level or settings.logging.level,
                   getattr(args, "log_format", None) or settings.logging.format)


def open_store(settings: Settings, *, upgrade: bool = False) -> Store:
    """For the commands that may create the store (run, once, db upgrade, auth --code)."""
    store = Store(settings.store.resolved_url(), timeout=settings.store.timeout)
    if upgrade:
        store.upgrade()
    return store


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for another backend or an in-memory database)."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - Store() reports a bad URL with its own message
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def store_revision(store: Store) -> str | None:
    """The Alembic revision the store is at; None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    with store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(store: Store) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(store.alembic_config()).get_current_head()


def open_existing_store(settings: Settings) -> Store:
    """For the commands that only read (status, trace, check, auth --status): never creates a store;
    a missing, unmigrated or unreachable one is a FatalError that says which and what to do."""
    url = settings.store.resolved_url()
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise StoreMissing(f"no state store at {path} (config {settings.source})", system="store",
                           action=CREATE_HINT)
    store = Store(url, timeout=settings.store.timeout)
    try:
        revision = store_revision(store)
    except (DBAPIError, OperationalError, OSError) as exc:
        store.dispose()
        raise FatalError(f"cannot read the state store {store.dialect} ({_first_line(exc)})",
                         system="store", action="check [store] url and that the database is running "
                                                "and reachable from here") from None
    if revision is None:
        store.dispose()
        raise StoreMissing(f"the state store {store_location(store)} is empty (never migrated)",
                           system="store", action=CREATE_HINT)
    return store


def store_location(store: Store) -> str:
    """Where the store is, for a person: the SQLite file, else the backend (never a password)."""
    path = sqlite_path(store.url)
    return str(path) if path is not None else f"({store.dialect})"


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")

