"""`amo1c-sync sandbox [story|serve]`: the emulators, and the seed's story on them."""

from __future__ import annotations

import json
import signal
import sys
import threading

from amo1c_sync import logs


def main(args) -> int:
    logs.configure(args.log_level or "WARNING", args.log_format or "auto")
    if args.action == "serve":
        return _serve(args)
    from amo1c_sync.sandbox.story import play

    return play(sys.stdout, keep=args.keep)


def _serve(args) -> int:
    from amo1c_sync.sandbox.serve import Sandbox
    from amo1c_sync.store import sqlite_url_for

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Sandbox(amo_port=args.amo_port, onec_port=args.onec_port) as sb:
        info = sb.urls()
        if args.write_config:
            from pathlib import Path

            from amo1c_sync.config import load_settings
            from amo1c_sync.store import Store

            store_url = sqlite_url_for(Path(args.write_config).resolve().parent / "amo1c-sync.db")
            info["config"] = str(sb.write_config(args.write_config, store_url))
            info["store"] = store_url
            store = Store(store_url)
            store.upgrade()
            sb.authorise(load_settings(args.write_config), store)  # as `auth --code` would
            store.dispose()
        print(json.dumps(info, ensure_ascii=False), flush=True)
        stop.wait()
    return 0
