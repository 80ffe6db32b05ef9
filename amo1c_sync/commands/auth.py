"""`amo1c-sync auth [--code CODE | --status]`: OAuth code exchange, or the token state."""

from __future__ import annotations

from amo1c_sync.amocrm import token_manager_from_settings
from amo1c_sync.commands.common import (StoreMissing, open_existing_store, open_store, print_json,
                                        settings_from)
from amo1c_sync.store import Store
from amo1c_sync.logs import register_secret


def main(args) -> int:
    if args.code:
        register_secret(args.code)
    settings = settings_from(args, say_which=not args.code)
    # only the exchange writes (the first token pair may well create the store); --status reads
    missing = None
    if args.code:
        store = open_store(settings, upgrade=True)
    else:
        try:
            store = open_existing_store(settings)
        except StoreMissing as exc:  # no store, so no token: say so in the usual shape
            missing, store = f"{exc}; {exc.action}", Store("sqlite://")
            store.upgrade()
    tokens = token_manager_from_settings(settings, store)
    state = tokens.exchange_code(args.code.strip()) if args.code else tokens.status()
    if missing:
        state["store"] = missing
    print_json(state)
    if not state.get("has_token") or state.get("revoked_reason"):
        return 1
    return 0
