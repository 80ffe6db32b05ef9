"""`amo1c-sync run`: the daemon (see amo1c_sync/daemon.py)."""

from __future__ import annotations

import os
import sys

from psycopg import Error as PsycopgError
from sqlalchemy.exc import DBAPIError

from amo1c_sync import config
from amo1c_sync.commands.common import open_store, settings_from
from amo1c_sync.errors import FatalError
from amo1c_sync.leader import migration_lock
from amo1c_sync.logs import get_logger

log = get_logger("amo1c_sync.run")


def main(args) -> int:
    settings = settings_from(args)
    config.require_http_secret(settings)
    store = open_store(settings)
    try:
        with migration_lock(store):
            store.upgrade()
    except (OSError, DBAPIError, PsycopgError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FatalError(f"store {store.dialect} unreachable at start-up: {first}", system="store") from None
    from amo1c_sync.daemon import Daemon

    daemon = Daemon(settings, store, config_path=getattr(args, "config", None), jobs=args.job_list)
    code = daemon.run()
    if daemon.unfinished:
        # a job thread is stuck in a remote call past the stop timeout: its run is recorded as
        # interrupted; leave without waiting for it (the interpreter would join the thread)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    store.dispose()
    return code
