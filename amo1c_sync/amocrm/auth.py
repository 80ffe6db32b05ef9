"""OAuth 2.0 tokens for amoCRM, persisted in the store.

Refresh tokens are single-use: a refresh issues a new pair and revokes the old refresh token.
Two refreshes with the same refresh token burn it (the second gets 401 "Token has been revoked"),
so every refresh runs inside ``store.exclusive("amocrm-token")`` (one thread and one process at a
time), re-reads the row there, and commits the new pair before anyone uses it.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import requests
import structlog

from amo1c_sync.errors import FatalError, RetriableError
from amo1c_sync.store.models import OAuthToken

try:  # the lead's logging module; tolerate its absence
    from amo1c_sync.logs import register_secret as _register_secret
except Exception:  # noqa: BLE001
    def _register_secret(value: str | None) -> None:
        return None

log = structlog.get_logger(__name__)

LOCK_NAME = "amocrm-token"
REAUTH_ACTION = ("open amoCRM > Settings > Integrations > «Интеграция 1С» > Keys, copy a new "
                 "authorization code and run `amo1c-sync auth --code CODE` (the code works for 20 minutes)")


def _register(*values: str | None) -> None:
    for v in values:
        if v:
            _register_secret(v)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class TokenManager:
    """Hands out a valid access token; refreshes ahead of expiry and after a 401.

    With ``long_lived_token`` (private integration) the token is used as is and never refreshed.
    """

    def __init__(self, store, *, base_url: str, client_id: str = "", client_secret: str | None = None,
                 redirect_uri: str = "", long_lived_token: str | None = None,
                 account_key: str | None = None, refresh_margin: float = 300.0,
                 connect_timeout: float = 5.0, read_timeout: float = 30.0,
                 session: requests.Session | None = None):
        self.store = store
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.redirect_uri = redirect_uri
        self._long_lived = long_lived_token or None
        self.account_key = account_key or (urlsplit(self.base_url).netloc or self.base_url)
        self.refresh_margin = timedelta(seconds=refresh_margin)
        self.timeouts = (connect_timeout, read_timeout)
        self._http = session or requests.Session()
        self._lock = threading.Lock()
        self._cached: tuple[str, datetime, int] | None = None   # token, expires_at, generation
        _register(client_secret, long_lived_token)

    @property
    def long_lived(self) -> bool:
        return self._long_lived is not None

    # ------------------------------------------------------------------ public
    def access_token(self) -> str:
        """A token valid for at least ``refresh_margin`` (refreshing if it is not)."""
        if self._long_lived:
            return self._long_lived
        with self._lock:
            cached = self._cached
            if cached and cached[1] - self.refresh_margin > _now():
                return cached[0]
        row = self._read()
        if row.revoked_reason:
            raise self._revoked_error(row.revoked_reason)
        if row.expires_at - self.refresh_margin > _now():
            self._remember(row.access_token, row.expires_at, row.generation)
            return row.access_token
        return self._refresh(failed_token=None)

    def on_unauthorized(self, failed_token: str | None = None) -> str:
        """The API answered 401 to ``failed_token``: get a newer token (refresh at most once)."""
        if self._long_lived:
            raise FatalError(
                "amoCRM rejected the long-lived token (401): it was revoked or has expired",
                system="amocrm",
                action="create a new long-lived token in the integration's settings in amoCRM "
                       "and put it into [amocrm] long_lived_token")
        return self._refresh(failed_token=failed_token or (self._cached[0] if self._cached else None))

    def exchange_code(self, code: str) -> dict[str, Any]:
        """Exchange an authorization code for a token pair and store it (``amo1c-sync auth``)."""
        if self._long_lived:
            raise FatalError("[amocrm] long_lived_token is set: there is no code to exchange",
                             system="amocrm", action="remove long_lived_token to use OAuth")
        _register(code)
        with self.store.exclusive(LOCK_NAME) as s:
            data = self._token_request({"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": self.redirect_uri}, on_reject="code")
            row = s.get(OAuthToken, self.account_key)
            expires_at = _now() + timedelta(seconds=int(data.get("expires_in", 86400)))
            if row is None:
                row = OAuthToken(account=self.account_key, generation=0)
                s.add(row)
            row.access_token = data["access_token"]
            row.refresh_token = data["refresh_token"]
            row.expires_at = expires_at
            row.generation = (row.generation or 0) + 1
            row.revoked_reason = None
            generation = row.generation
        self._remember(data["access_token"], expires_at, generation)
        log.info("amocrm.auth.code_exchanged", account=self.account_key, generation=generation,
                 expires_at=expires_at.isoformat())
        return self.status()

    def status(self) -> dict[str, Any]:
        """For `amo1c-sync status` / `auth`: no secret values."""
        if self._long_lived:
            return {"mode": "long_lived", "account": self.account_key, "has_token": True}
        with self.store.session() as s:
            row = s.get(OAuthToken, self.account_key)
            if row is None:
                return {"mode": "oauth", "account": self.account_key, "has_token": False,
                        "action": "run `amo1c-sync auth --code CODE`"}
            out = {"mode": "oauth", "account": self.account_key, "has_token": True,
                   "expires_at": row.expires_at.isoformat(),
                   "expires_in_s": int((row.expires_at - _now()).total_seconds()),
                   "generation": row.generation, "revoked_reason": row.revoked_reason,
                   "updated_at": row.updated_at.isoformat() if row.updated_at else None}
            if row.revoked_reason:
                out["action"] = REAUTH_ACTION
            return out

    # ------------------------------------------------------------------ internals
    def _remember(self, token: str, expires_at: datetime, generation: int) -> None:
        _register(token)
        with self._lock:
            self._cached = (token, expires_at, generation)

    def _read(self) -> OAuthToken:
        with self.store.session() as s:
            row = s.get(OAuthToken, self.account_key)
            if row is None:
                raise FatalError("no amoCRM token in the store", system="amocrm",
                                 action=REAUTH_ACTION)
            s.expunge(row)
        _register(row.access_token, row.refresh_token)
        return row

    def _revoked_error(self, reason: str) -> FatalError:
        return FatalError(f"amoCRM refused the stored refresh token ({reason}); amoCRM work is "
                          "stopped until the integration is authorised again",
                          system="amocrm", action=REAUTH_ACTION)

    def _refresh(self, failed_token: str | None) -> str:
        """Refresh under the cross-process lock, unless someone else already did."""
        with self.store.exclusive(LOCK_NAME) as s:
            row = s.get(OAuthToken, self.account_key)
            if row is None:
                raise FatalError("no amoCRM token in the store", system="amocrm", action=REAUTH_ACTION)
            _register(row.access_token, row.refresh_token)
            if row.revoked_reason:
                raise self._revoked_error(row.revoked_reason)
            if row.access_token != failed_token and row.expires_at - self.refresh_margin > _now():
                # another thread/process refreshed while we waited for the lock
                token, expires_at, generation = row.access_token, row.expires_at, row.generation
                revoked = None
            else:
                try:
                    data = self._token_request({"grant_type": "refresh_token",
                                                "refresh_token": row.refresh_token,
                                                "redirect_uri": self.redirect_uri},
                                               on_reject="refresh")
                except _Rejected as rej:
                    row.revoked_reason = rej.reason
                    revoked = rej.reason  # committed when the block exits normally
                else:
                    revoked = None
                    expires_at = _now() + timedelta(seconds=int(data.get("expires_in", 86400)))
                    row.access_token = data["access_token"]
                    row.refresh_token = data["refresh_token"]
                    row.expires_at = expires_at
                    row.generation = (row.generation or 0) + 1
                    token, generation = row.access_token, row.generation
        # the new pair is committed here, before anyone uses it
        if revoked:
            log.error("amocrm.auth.revoked", account=self.account_key, reason=revoked,
                      action=REAUTH_ACTION)
            raise self._revoked_error(revoked)
        self._remember(token, expires_at, generation)
        log.info("amocrm.auth.token_ready", account=self.account_key, generation=generation,
                 expires_at=expires_at.isoformat())
        return token

    def _token_request(self, payload: dict, *, on_reject: str) -> dict:
        body = {"client_id": self.client_id, "client_secret": self._client_secret or "", **payload}
        try:
            resp = self._http.post(f"{self.base_url}/oauth2/access_token", json=body,
                                   timeout=self.timeouts)
        except requests.RequestException as exc:
            raise RetriableError(f"amoCRM token endpoint unreachable ({type(exc).__name__})") from None
        if resp.status_code >= 500 or resp.status_code == 429:
            raise RetriableError(f"amoCRM token endpoint answered {resp.status_code}")
        if resp.status_code in (400, 401, 403):
            hint = ""
            try:
                j = resp.json()
                hint = j.get("hint") or j.get("detail") or j.get("title") or ""
            except ValueError:
                pass
            reason = f"{resp.status_code} {hint}".strip()
            if "client authentication" in hint.lower():
                raise FatalError(f"amoCRM rejected the integration's credentials ({reason})",
                                 system="amocrm",
                                 action="check [amocrm] client_id and client_secret against the "
                                        "integration's Keys tab in amoCRM")
            if on_reject == "code":
                raise FatalError(f"amoCRM did not accept the authorization code ({reason})",
                                 system="amocrm", action=REAUTH_ACTION)
            raise _Rejected(reason)
        if resp.status_code != 200:
            raise RetriableError(f"amoCRM token endpoint answered {resp.status_code}")
        try:
            data = resp.json()
            _register(data.get("access_token"), data.get("refresh_token"))
            data["access_token"], data["refresh_token"]  # noqa: B018 - presence check
        except (ValueError, KeyError):
            raise RetriableError("amoCRM token endpoint answered 200 without a token pair") from None
        return data


class _Rejected(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
