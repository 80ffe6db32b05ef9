"""`amo1c-sync auth [--code CODE | --status]`: OAuth code exchange, or the token state."""

from __future__ import annotations

from typing import Any

from amo1c_sync.amocrm import token_manager_from_settings
from amo1c_sync.amocrm.auth import TokenManager
from amo1c_sync.commands.common import (StoreMissing, open_existing_store, open_store, print_json,
                                        settings_from)
from amo1c_sync.errors import FatalError, RetriableError
from amo1c_sync.logs import register_secret
from amo1c_sync.store import Store

LOST_EXCHANGE_ACTION = ("run `amo1c-sync auth --status`: if it shows no token, amoCRM may have used the "
                        "code (it is single-use), so take a new one from the integration's settings in "
                        "amoCRM and run `amo1c-sync auth --code NEW_CODE`")


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
    state = _exchange(tokens, args.code.strip()) if args.code else tokens.status()
    if missing:
        state["store"] = missing
    print_json(state)
    if not state.get("has_token") or state.get("revoked_reason"):
        return 1
    return 0


def _exchange(tokens: TokenManager, code: str) -> dict[str, Any]:
    """A lost answer cannot be retried with the same single-use code: say what to do instead."""
    try:
        return tokens.exchange_code(code)
    except RetriableError as exc:
        raise FatalError(f"amoCRM did not confirm the code exchange ({exc})", system="amocrm",
                         action=LOST_EXCHANGE_ACTION) from None
