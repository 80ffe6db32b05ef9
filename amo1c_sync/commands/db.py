"""`amo1c-sync db upgrade [--revision REV]`: migrate the state store, and say which and to what."""

from __future__ import annotations

from amo1c_sync.commands.common import head_revision, open_store, settings_from, store_location, store_revision


def main(args) -> int:
    settings = settings_from(args)
    store = open_store(settings)
    before = store_revision(store)
    store.upgrade(args.revision)
    after = store_revision(store)
    head = head_revision(store)
    where = store_location(store)
    state = "the newest" if after == head else f"not the newest ({head})"
    if before == after:
        print(f"store {where}: already at revision {after} ({state}); nothing to do")
    else:
        print(f"store {where}: upgraded from {before or 'empty'} to revision {after} ({state})")
    store.dispose()
    return 0
