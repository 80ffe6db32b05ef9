"""`amo1c-sync auth [--code CODE | --status]`: OAuth code exchange, or the token state."""

from __future__ import annotations

from amo1c_sync.amocrm import token_manager_from_settings
from amo1c_sync.commands.common import open_store, print_json, settings_from
from amo1c_sync.logs import register_secret


def main(args) -> int:
    if args.code:
        register_secret(args.code)
    settings = settings_from(args)
    store = open_store(settings, upgrade=True)
    tokens = token_manager_from_settings(settings, store)
    state = tokens.exchange_code(args.code.strip()) if args.code else tokens.status()
    print_json(state)
    if not state.get("has_token") or state.get("revoked_reason"):
        return 1
    return 0
