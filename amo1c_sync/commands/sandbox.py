"""`amo1c-sync sandbox [story|serve]`: the emulators, and the seed's story on them."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from amo1c_sync import logs


def main(args) -> int:
    logs.configure(args.log_level or "WARNING", args.log_format or "auto")
    if args.action == "serve":
        return _serve(args)
    from amo1c_sync.sandbox.story import play

    return play(sys.stdout, keep=args.keep)


def _serve(args) -> int:
    from amo1c_sync.sandbox.serve import Sandbox

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    with Sandbox(amo_port=args.amo_port, onec_port=args.onec_port, fresh=args.fresh) as sb:
        info: dict[str, object] = dict(sb.urls())
        if args.fresh:  # nothing is configured yet: the person fills sync.ini from these
            info["credentials"] = sb.credentials()
        if args.write_config:
            info.update(_write_config(sb, Path(args.write_config)))
        if sys.stdout.isatty():
            print(_for_a_person(info, fresh=args.fresh), flush=True)
        else:  # a script reads one JSON line
            print(json.dumps(info, ensure_ascii=False), flush=True)
        stop.wait()
    return 0


def _write_config(sb, path: Path) -> dict:
    from amo1c_sync.config import load_settings
    from amo1c_sync.store import Store, sqlite_url_for

    store_url = sqlite_url_for(path.resolve().parent / "amo1c-sync.db")
    written = sb.write_config(path, store_url)
    store = Store(store_url)
    store.upgrade()
    sb.authorise(load_settings(written), store)  # as `auth --code` would
    store.dispose()
    return {"config": str(written), "store": store_url}


def _for_a_person(info: dict, *, fresh: bool) -> str:
    lines = ["amo1c-sync sandbox serve" + (" (fresh: nothing set up yet)" if fresh else ""),
             f"  amoCRM emulator  {info['amocrm']}   control: {info['amocrm_control']}",
             f"  1C emulator      {info['onec']}",
             f"                   control: {info['onec_control']}"]
    for key, value in (info.get("credentials") or {}).items():
        lines.append(f"  {key:<16} {value}")
    if info.get("config"):
        lines.append(f"  config           {info['config']} (authorised; try: amo1c-sync --config "
                     f"{info['config']} check)")
    lines.append("Ctrl-C (or SIGTERM) stops both.")
    return "\n".join(lines)
