from amo1c_sync.store.db import Store, sqlite_url_for
from amo1c_sync.store import models

__all__ = ["Store", "models", "sqlite_url_for"]
