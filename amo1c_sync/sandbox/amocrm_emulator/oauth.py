"""OAuth 2 as amoCRM runs it: authorization codes (20 minutes), access tokens that expire,
single-use refresh tokens (a reuse answers 401 ``"hint": "Token has been revoked"`` and is
counted), and long-lived tokens (private integrations) that never expire here.

Access and long-lived tokens are JWTs, ``header.payload.signature`` in base64url, as amoCRM
issues them: header ``{"typ": "JWT", "alg": "RS256", "jti"}``, payload ``aud`` (the client id),
``jti``, ``iat``, ``nbf``, ``exp``, ``sub`` (the user), ``grant_type``, ``account_id``,
``base_domain``, ``version``, ``scopes``, ``hash_uuid``, ``api_domain`` — the claims of a real
token published in yosytone/roistat_task src/config.php. Clients such as Krukov/amocrm_api
(amocrm/v2/tokens.py) decode ``exp`` before each call. The signature here is random bytes: nobody
outside amoCRM holds its key, so clients never verify it.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid

from amo1c_sync.sandbox.amocrm_emulator.problems import Problem


def oauth_problem(hint: str, status: int = 401) -> Problem:
    return Problem(status, "В запросе отсутствует ряд параметров или параметры невалидны",
                   title="Некорректный запрос", hint=hint,
                   type="https://developers.amocrm.ru/v3/errors/OAuthProblemJson")


class Tokens:
    """The account's OAuth state: codes, access and refresh tokens, their expiry and use."""

    def __init__(self, *, client_id: str, client_secret: str, redirect_uri: str,
                 access_token_ttl: int, refresh_token_ttl: int, long_lived_token: str | None = None,
                 account_id: int = 29000001, user_id: int = 8000001):
        self.account_id, self.user_id = account_id, user_id
        self.client_id, self.client_secret, self.redirect_uri = client_id, client_secret, redirect_uri
        self.access_token_ttl, self.refresh_token_ttl = access_token_ttl, refresh_token_ttl
        self._lock = threading.Lock()
        self._codes: dict[str, float] = {}
        self._access: dict[str, float] = {}      # token -> expires_at (wall clock); inf = long-lived
        self._refresh: dict[str, dict] = {}      # token -> {"used": bool, "expires_at": float}
        self.refresh_reuse_count = 0
        self.refresh_count = 0
        self.code_exchanges = 0
        if long_lived_token:
            self._access[long_lived_token] = float("inf")

    def valid(self, token: str) -> bool:
        with self._lock:
            exp = self._access.get(token)
        return exp is not None and exp > time.time()

    def stats(self) -> dict:
        with self._lock:
            return {"refresh_reuse_count": self.refresh_reuse_count,
                    "refresh_count": self.refresh_count, "code_exchanges": self.code_exchanges,
                    "active_refresh_tokens": sum(1 for r in self._refresh.values() if not r["used"])}

    def expire_all(self) -> None:
        with self._lock:
            now = time.time()
            for tok, exp in list(self._access.items()):
                if exp != float("inf"):
                    self._access[tok] = min(exp, now - 1)

    def new_code(self) -> dict:
        with self._lock:
            code = "def502" + secrets.token_hex(40)
            self._codes[code] = time.time() + 20 * 60
            return {"code": code, "client_id": self.client_id,
                    "client_secret": self.client_secret, "redirect_uri": self.redirect_uri}

    def long_lived(self) -> str:
        with self._lock:
            now = int(time.time())
            tok = self.jwt(now, now + 5 * 365 * 86400, grant_type="")  # amoCRM offers up to 5 years
            self._access[tok] = float("inf")
            return tok

    def jwt(self, iat: int, exp: int, *, grant_type: str) -> str:
        jti = secrets.token_hex(40)
        header = {"typ": "JWT", "alg": "RS256", "jti": jti}
        payload = {"aud": self.client_id, "jti": jti, "iat": iat, "nbf": iat, "exp": exp,
                   "sub": str(self.user_id), "grant_type": grant_type, "account_id": self.account_id,
                   "base_domain": "amocrm.ru", "version": 2, "scopes": ["crm", "files", "notifications"],
                   "hash_uuid": str(uuid.uuid4()), "api_domain": "api-b.amocrm.ru"}
        return ".".join(_b64url(part) for part in (json.dumps(header).encode(), json.dumps(payload).encode(),
                                                   secrets.token_bytes(256)))

    def _new_pair(self) -> dict:
        now = time.time()
        access = self.jwt(int(now), int(now) + self.access_token_ttl, grant_type="authorization_code")
        refresh = "def502" + secrets.token_hex(200)  # opaque, as amoCRM's refresh tokens are
        self._access[access] = now + self.access_token_ttl
        self._refresh[refresh] = {"used": False, "expires_at": now + self.refresh_token_ttl}
        return {"token_type": "Bearer", "expires_in": self.access_token_ttl,
                "access_token": access, "refresh_token": refresh}

    def grant(self, data: dict) -> dict:
        """``POST /oauth2/access_token``: a new pair, or the Problem amoCRM answers."""
        with self._lock:
            if data.get("client_id") != self.client_id or data.get("client_secret") != self.client_secret:
                raise oauth_problem("Client authentication failed")
            grant = data.get("grant_type")
            if grant == "authorization_code":
                return self._exchange_code(data)
            if grant == "refresh_token":
                return self._refresh_pair(data)
        raise oauth_problem("The authorization grant type is not supported", 400)

    def _exchange_code(self, data: dict) -> dict:
        exp = self._codes.pop(data.get("code") or "", None)
        if exp is None or exp < time.time():
            raise oauth_problem("Authorization code has been revoked", 400)
        if data.get("redirect_uri") != self.redirect_uri:
            raise oauth_problem("redirect_uri mismatch", 400)
        self.code_exchanges += 1
        return self._new_pair()

    def _refresh_pair(self, data: dict) -> dict:
        rt = self._refresh.get(data.get("refresh_token") or "")
        if rt is None:
            raise oauth_problem("Cannot decrypt the refresh token")
        if rt["used"]:
            self.refresh_reuse_count += 1
            raise oauth_problem("Token has been revoked")
        if rt["expires_at"] < time.time():
            raise oauth_problem("Token has expired")
        rt["used"] = True
        self.refresh_count += 1
        return self._new_pair()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
