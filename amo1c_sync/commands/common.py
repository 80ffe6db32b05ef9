"""What every command does first: settings, logging, the store."""

from __future__ import annotations

import json
import sys
from typing import Any

from amo1c_sync import config, logs
from amo1c_sync.config import Settings
from amo1c_sync.store import Store


def settings_from(args) -> Settings:
    settings = config.load(getattr(args, "config", None))
    setup_logging(args, settings)
    return settings


def setup_logging(args, settings: Settings) -> None:
    for secret in settings.secrets():
        logs.register_secret(secret)
    logs.configure(getattr(args, "log_level", None) or settings.logging.level,
                   getattr(args, "log_format", None) or settings.logging.format)


def open_store(settings: Settings, *, upgrade: bool = False) -> Store:
    store = Store(settings.store.resolved_url())
    if upgrade:
        store.upgrade()
    return store


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")
