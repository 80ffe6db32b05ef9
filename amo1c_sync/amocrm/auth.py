"""OAuth 2.0 tokens for amoCRM, persisted in the store.

Refresh tokens are single-use: a refresh issues a new pair and revokes the old refresh token, and
amoCRM's answer is the only copy of the new one. So a refresh token is sent at most once:

1. under ``store.exclusive("amocrm-token")`` the row is re-read (another thread or process may
   have refreshed already: then its pair is used) and, if a refresh is still needed, marked "in
   flight" (``revoked_reason`` starts with ``IN_FLIGHT``) and committed;
2. the request goes out with no lock held (a generous ``token_timeout``); anyone else who needs a
   refresh meanwhile sees the mark and waits, re-reading the store;
3. the outcome is committed under the lock: the new pair; or the token back as it was when the
   request surely did not reach amoCRM or was refused unprocessed (connection refused, connect
   timeout, 429, 503); or "revoked" for a rejection, and for an answer that was lost (read
   timeout, a connection cut after sending, 502/504, a 200 without a pair), since amoCRM may have
   spent the token: a person re-authorises (REAUTH_ACTION) instead of the token being sent again.

SIGKILL after step 1 leaves the mark: once it is older than the longest a request can take (or
its process, on this host, is gone) it counts as a lost answer. A stop waits for a refresh in
flight (``wait_for_refreshes``). A private integration's long-lived token needs none of this.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import requests
import structlog

from amo1c_sync.amocrm import responses
from amo1c_sync.domain.retry import RequestRetry
from amo1c_sync.errors import FatalError, RetriableError
from amo1c_sync.transport import Action, Transport
from amo1c_sync.store.models import OAuthToken

try:  # the lead's logging module; tolerate its absence
    from amo1c_sync.logs import register_secret as _register_secret
except Exception:  # noqa: BLE001
    def _register_secret(value: str | None) -> None:
        return None

log = structlog.get_logger(__name__)

LOCK_NAME = "amocrm-token"
IN_FLIGHT = "refresh in flight"   # revoked_reason while a refresh waits for its answer
STORE_PAIR_ATTEMPTS = 5
REAUTH_ACTION = ("open amoCRM > Settings > Integrations > «Интеграция 1С» > Keys, copy a new "
                 "authorization code and run `amo1c-sync auth --code CODE` (the code works for 20 minutes)")


def _register(*values: str | None) -> None:
    for v in values:
        if v:
            _register_secret(v)


def _now() -> datetime:
    return datetime.now(timezone.utc)


_inflight = 0
_inflight_cond = threading.Condition()


@contextmanager
def _refresh_in_flight():
    global _inflight
    with _inflight_cond:
        _inflight += 1
    try:
        yield
    finally:
        with _inflight_cond:
            _inflight -= 1
            _inflight_cond.notify_all()


def wait_for_refreshes(timeout: float) -> bool:
    """Wait until no token refresh of this process is waiting for its answer; False on timeout."""
    deadline = time.monotonic() + timeout
    with _inflight_cond:
        while _inflight:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _inflight_cond.wait(left)
    return True


def _in_flight_mark() -> str:
    return f"{IN_FLIGHT} since {_now().isoformat(timespec='seconds')} ({socket.gethostname()}:{os.getpid()})"


def _mark_age_and_owner(reason: str) -> tuple[float, str, int | None]:
    """Seconds since the mark was set, and its host and pid (an unreadable mark counts as old)."""
    try:
        stamp, _, owner = reason[len(IN_FLIGHT) + len(" since "):].partition(" (")
        host, _, pid = owner.rstrip(")").rpartition(":")
        age = (_now() - datetime.fromisoformat(stamp)).total_seconds()
        return age, host, int(pid)
    except ValueError:
        return float("inf"), "", None


def _owner_gone(host: str, pid: int | None) -> bool:
    if host != socket.gethostname() or pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


class TokenManager:
    """Hands out a valid access token; refreshes ahead of expiry and after a 401.

    With ``long_lived_token`` (private integration) the token is used as is and never refreshed.
    """

    def __init__(self, store, *, base_url: str, client_id: str = "", client_secret: str | None = None,
                 redirect_uri: str = "", long_lived_token: str | None = None,
                 account_key: str | None = None, refresh_margin: float = 300.0,
                 connect_timeout: float = 5.0, token_timeout: float = 60.0,
                 session: requests.Session | None = None):
        self.store = store
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.redirect_uri = redirect_uri
        self._long_lived = long_lived_token or None
        self.account_key = account_key or (urlsplit(self.base_url).netloc or self.base_url)
        self.refresh_margin = timedelta(seconds=refresh_margin)
        self.timeouts = (connect_timeout, token_timeout)   # the token endpoint's
        # a mark older than this cannot belong to a request still waiting for its answer
        self.in_flight_limit = connect_timeout + token_timeout + 30.0
        self._http = session or requests.Session()
        self._transport = Transport(system="amocrm-token", label="amoCRM token endpoint",
                                    base_url=self.base_url, table=responses.TOKEN, session=self._http,
                                    timeouts=self.timeouts, policy=RequestRetry(retries=0))
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
        if row.revoked_reason and not row.revoked_reason.startswith(IN_FLIGHT):
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
            if (row.revoked_reason or "").startswith(IN_FLIGHT):
                out["revoked_reason"], out["refresh_in_flight"] = None, row.revoked_reason
            elif row.revoked_reason:
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
        """A token newer than ``failed_token``: one another thread or process stored, or ours."""
        waited_since = time.monotonic()
        while True:
            ready, refresh_token = self._claim(failed_token)
            if ready is not None:
                return ready
            if refresh_token is not None:
                break
            if time.monotonic() - waited_since > self.in_flight_limit:
                raise RetriableError("another process has been refreshing the amoCRM token for too "
                                     "long; will try again")
            time.sleep(0.2)   # someone else's refresh is in flight: its outcome lands in the store
        with _refresh_in_flight():   # until the outcome is in the store
            return self._settle(refresh_token, self._send_refresh(refresh_token))

    def _claim(self, failed_token: str | None) -> tuple[str | None, str | None]:
        """Re-read the row under the lock. (token, None): a usable token is there; (None, rt):
        we own the refresh with ``rt`` (its mark is committed on return); (None, None): wait."""
        with self.store.exclusive(LOCK_NAME) as s:
            row = s.get(OAuthToken, self.account_key)
            if row is None:
                raise FatalError("no amoCRM token in the store", system="amocrm", action=REAUTH_ACTION)
            _register(row.access_token, row.refresh_token)
            reason = row.revoked_reason or ""
            if reason.startswith(IN_FLIGHT):
                age, host, pid = _mark_age_and_owner(reason)
                if age <= self.in_flight_limit and not _owner_gone(host, pid):
                    if row.access_token != failed_token and row.expires_at > _now():
                        return row.access_token, None   # still good while the refresh is out
                    return None, None
                row.revoked_reason = reason = self._lost_reason(reason, "its process ended or gave up")
            if reason:
                lost = reason
            elif row.access_token != failed_token and row.expires_at - self.refresh_margin > _now():
                token, expires_at, generation = row.access_token, row.expires_at, row.generation
                lost = None
            else:
                row.revoked_reason = _in_flight_mark()
                return None, row.refresh_token
        if lost:
            raise self._revoked_error(lost)
        self._remember(token, expires_at, generation)
        return token, None

    def _send_refresh(self, refresh_token: str):
        """The token endpoint's answer to this refresh token: a dict (the new pair), or the
        exception that says what became of the token."""
        try:
            return self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token,
                                        "redirect_uri": self.redirect_uri}, on_reject="refresh")
        except (_Rejected, _Unsent, _Lost, FatalError) as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - anything else: we cannot tell it was not spent
            return _Lost(f"{type(exc).__name__}")

    def _settle(self, refresh_token: str, outcome) -> str:
        """Commit what became of ``refresh_token`` (see the module docstring, step 3)."""
        if isinstance(outcome, dict):
            return self._store_pair(outcome)
        with self.store.exclusive(LOCK_NAME) as s:
            row = s.get(OAuthToken, self.account_key)
            if row is not None and row.refresh_token == refresh_token:   # nobody re-authorised meanwhile
                if isinstance(outcome, (_Unsent, FatalError)):
                    row.revoked_reason = None   # amoCRM did not take the token: it is still good
                elif isinstance(outcome, _Rejected):
                    row.revoked_reason = outcome.reason
                else:
                    row.revoked_reason = self._lost_reason(row.revoked_reason or "", str(outcome))
            revoked = row.revoked_reason if row is not None else None
        if isinstance(outcome, FatalError):
            raise outcome
        if isinstance(outcome, _Unsent):
            raise RetriableError(str(outcome))
        log.error("amocrm.auth.revoked", account=self.account_key, reason=revoked or str(outcome),
                  action=REAUTH_ACTION)
        raise self._revoked_error(revoked or str(outcome))

    def _store_pair(self, data: dict) -> str:
        """Commit the new pair; the store is tried again for a while, since this answer is the
        only copy of the new refresh token."""
        expires_at = _now() + timedelta(seconds=int(data.get("expires_in", 86400)))
        for attempt in range(1, STORE_PAIR_ATTEMPTS + 1):
            try:
                generation = self._write_pair(data, expires_at)
                break
            except Exception as exc:  # noqa: BLE001 - the store away for a moment
                log.error("amocrm.auth.pair_not_stored", account=self.account_key, attempt=attempt,
                          error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                if attempt == STORE_PAIR_ATTEMPTS:
                    raise RetriableError("amoCRM issued a new token pair but the store did not take "
                                         "it") from None
                time.sleep(2.0)
        # the new pair is committed here, before anyone uses it
        self._remember(data["access_token"], expires_at, generation)
        log.info("amocrm.auth.token_ready", account=self.account_key, generation=generation,
                 expires_at=expires_at.isoformat())
        return data["access_token"]

    def _write_pair(self, data: dict, expires_at: datetime) -> int:
        with self.store.exclusive(LOCK_NAME) as s:
            row = s.get(OAuthToken, self.account_key)
            if row is None:
                row = OAuthToken(account=self.account_key, generation=0)
                s.add(row)
            row.access_token, row.refresh_token = data["access_token"], data["refresh_token"]
            row.expires_at, row.revoked_reason = expires_at, None
            row.generation = (row.generation or 0) + 1
            return row.generation

    @staticmethod
    def _lost_reason(mark: str, why: str) -> str:
        since = mark[len(IN_FLIGHT):].split("(")[0].strip().removeprefix("since ") \
            if mark.startswith(IN_FLIGHT) else ""
        return (f"the answer to the token refresh sent at {since or 'an unknown time'} was lost ({why}); "
                "amoCRM may have spent the single-use refresh token, so it is not sent again")

    def _token_request(self, payload: dict, *, on_reject: str) -> dict:
        """The pair amoCRM issued; ``_Unsent`` when it surely did not act on the request, ``_Lost``
        when it may have, ``_Rejected``/FatalError when it refused the grant (the rows of
        ``responses.TOKEN``). Sent once: the transport never retries it."""
        body = {"client_id": self.client_id, "client_secret": self._client_secret or "", **payload}
        ex = self._transport.attempt("POST", "/oauth2/access_token", json=body)
        if ex.error is not None:
            kind = _Lost if ex.sent else _Unsent
            raise kind(f"amoCRM token endpoint: {type(ex.error).__name__}")
        resp = ex.response
        assert resp is not None
        if ex.action is Action.RETRY:
            raise _Unsent(f"amoCRM token endpoint answered {resp.status_code}")
        if ex.action is Action.FAIL:
            raise self._refused(resp, on_reject)
        if ex.action is not Action.OK:
            raise _Lost(ex.resolution.why)
        try:
            data = resp.json()
            _register(data.get("access_token"), data.get("refresh_token"))
            data["access_token"], data["refresh_token"]  # presence check
        except (ValueError, KeyError, AttributeError, TypeError):
            raise _Lost("amoCRM token endpoint answered 200 without a token pair") from None
        return data

    @staticmethod
    def _refused(resp: requests.Response, on_reject: str) -> Exception:
        """What a refused grant means: bad credentials and a bad code need a person (FatalError);
        a refused refresh token is ``_Rejected``."""
        hint = ""
        try:
            j = resp.json()
            hint = j.get("hint") or j.get("detail") or j.get("title") or ""
        except (ValueError, AttributeError):
            pass
        reason = f"{resp.status_code} {hint}".strip()
        if "client authentication" in str(hint).lower():
            return FatalError(f"amoCRM rejected the integration's credentials ({reason})",
                              system="amocrm",
                              action="check [amocrm] client_id and client_secret against the "
                                     "integration's Keys tab in amoCRM")
        if on_reject == "code":
            return FatalError(f"amoCRM did not accept the authorization code ({reason})",
                              system="amocrm", action=REAUTH_ACTION)
        return _Rejected(reason)


class _Unsent(RetriableError):
    """amoCRM did not act on the token request; the same grant may be sent again."""


class _Lost(RetriableError):
    """The token request may have been carried out but its answer is lost."""


class _Rejected(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
