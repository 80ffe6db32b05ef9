"""Reader of the stored amoCRM token pairs for `status` (their writer is amocrm/auth.py's TokenManager)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from amo1c_sync.store.models import OAuthToken

if TYPE_CHECKING:
    from amo1c_sync.store.db import Store


def stored_tokens(store: Store) -> list[OAuthToken]:
    with store.session() as s:
        return list(s.scalars(select(OAuthToken).order_by(OAuthToken.account)))
