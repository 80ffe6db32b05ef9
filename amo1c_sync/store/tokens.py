"""Reader of the stored amoCRM token pairs for `status` (their writer is amocrm/auth.py's TokenManager)."""

from __future__ import annotations

from sqlalchemy import select

from amo1c_sync.store.models import OAuthToken


def stored_tokens(store) -> list[OAuthToken]:
    with store.session() as s:
        return list(s.scalars(select(OAuthToken).order_by(OAuthToken.account)))
