"""The state layer: the only place that issues SQL (one module per kind of state)."""

from amo1c_sync.store.db import Store, sqlite_url_for
from amo1c_sync.store import models

__all__ = ["Store", "models", "sqlite_url_for"]
