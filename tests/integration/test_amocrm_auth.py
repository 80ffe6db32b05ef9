"""OAuth against the amoCRM emulator over HTTP, with the token pair in a real store (SQLite file
and PostgreSQL): rotation, reuse -> revoked, refresh under concurrency of threads and processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import textwrap
from datetime import datetime, timedelta, timezone

import pytest
import requests

from amo1c_sync.amocrm.auth import TokenManager
from amo1c_sync.amocrm.gateway import AmoCRM
from amo1c_sync.errors import FatalError
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.store.models import OAuthToken


@pytest.fixture
def emu():
    with AmoCRMEmulator(rate_limit=1000) as e:
        yield e


def _manager(emu, store, **kw) -> TokenManager:
    return TokenManager(store, base_url=emu.url, client_id=emu.client_id,
                        client_secret=emu.client_secret, redirect_uri=emu.redirect_uri, **kw)


def _authorised(emu, store) -> TokenManager:
    tm = _manager(emu, store)
    code = requests.post(emu.url + "/_sandbox/oauth/code", timeout=5).json()["code"]
    tm.exchange_code(code)
    return tm


def _expire_in_store(store, tm) -> None:
    with store.session() as s:
        s.get(OAuthToken, tm.account_key).expires_at = datetime.now(timezone.utc) - timedelta(seconds=1)


def test_given_an_authorization_code_when_exchanged_then_the_pair_is_stored_and_the_api_answers(emu, store):
    tm = _authorised(emu, store)

    status = tm.status()
    assert status["has_token"]
    assert status["generation"] == 1
    assert status["revoked_reason"] is None
    assert status["expires_in_s"] > 86000
    assert "access_token" not in status
    assert "refresh_token" not in status
    assert AmoCRM(emu.url, token_manager=tm).account_timezone() == "Europe/Moscow"


def test_given_an_access_token_expired_at_amocrm_when_calling_then_it_refreshes_once_and_rotates(emu, store):
    tm = _authorised(emu, store)
    api = AmoCRM(emu.url, token_manager=tm)
    api.account()
    with store.session() as s:
        first_refresh = s.get(OAuthToken, tm.account_key).refresh_token

    requests.post(emu.url + "/_sandbox/tokens/expire", timeout=5)
    api.account()

    stats = emu.token_stats()
    assert stats["refresh_count"] == 1
    assert stats["refresh_reuse_count"] == 0
    with store.session() as s:
        row = s.get(OAuthToken, tm.account_key)
        assert row.generation == 2
        assert row.refresh_token != first_refresh


def test_given_a_token_near_expiry_in_the_store_when_asked_then_it_refreshes_ahead(emu, store):
    tm = _authorised(emu, store)
    with store.session() as s:
        s.get(OAuthToken, tm.account_key).expires_at = datetime.now(timezone.utc) + timedelta(seconds=60)
    fresh = _manager(emu, store, refresh_margin=300)

    fresh.access_token()

    assert emu.token_stats()["refresh_count"] == 1
    assert fresh.status()["expires_in_s"] > 86000


def test_given_a_refresh_token_used_elsewhere_when_refreshing_then_fatal_with_reauth_advice(emu, store):
    tm = _authorised(emu, store)
    with store.session() as s:
        stolen = s.get(OAuthToken, tm.account_key).refresh_token
    # someone else (a copy of the config on another machine) rotates the pair behind our back
    r = requests.post(emu.url + "/oauth2/access_token", timeout=5, json={
        "client_id": emu.client_id, "client_secret": emu.client_secret,
        "grant_type": "refresh_token", "refresh_token": stolen, "redirect_uri": emu.redirect_uri})
    assert r.status_code == 200
    _expire_in_store(store, tm)

    with pytest.raises(FatalError) as exc:
        _manager(emu, store).access_token()

    assert "amo1c-sync auth --code" in exc.value.action
    assert stolen not in str(exc.value)
    assert exc.value.system == "amocrm"
    assert emu.token_stats()["refresh_reuse_count"] == 1
    assert "Token has been revoked" in tm.status()["revoked_reason"]
    # stopped: later calls fail at once without hammering the token endpoint
    before = emu.requests()["counts"].get("POST /oauth2/access_token")
    with pytest.raises(FatalError):
        _manager(emu, store).access_token()
    assert emu.requests()["counts"].get("POST /oauth2/access_token") == before


def test_given_a_revoked_token_when_a_new_code_is_exchanged_then_work_resumes(emu, store):
    tm = _authorised(emu, store)
    with store.session() as s:
        s.get(OAuthToken, tm.account_key).revoked_reason = "401 Token has been revoked"
    with pytest.raises(FatalError):
        _manager(emu, store).access_token()

    tm.exchange_code(emu.new_auth_code()["code"])

    assert tm.status()["revoked_reason"] is None
    assert AmoCRM(emu.url, token_manager=tm).account()["id"]


def test_given_no_stored_token_when_asked_then_fatal_tells_to_authorise(emu, store):
    with pytest.raises(FatalError) as exc:
        _manager(emu, store).access_token()
    assert "amo1c-sync auth --code" in exc.value.action


def test_given_eight_threads_when_the_token_expires_then_exactly_one_refresh_and_no_reuse(emu, store):
    _authorised(emu, store)
    apis = [AmoCRM(emu.url, token_manager=_manager(emu, store)) for _ in range(8)]
    for api in apis:
        api.account()   # each manager caches the current token
    requests.post(emu.url + "/_sandbox/tokens/expire", timeout=5)   # all get 401 at once
    barrier = threading.Barrier(len(apis))
    errors: list[BaseException] = []

    def work(api):
        try:
            barrier.wait(timeout=10)
            api.account()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a,)) for a in apis]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    stats = emu.token_stats()
    assert stats["refresh_reuse_count"] == 0
    assert stats["refresh_count"] == 1


_CHILD = textwrap.dedent("""
    import os, sys, time
    from amo1c_sync.amocrm.auth import TokenManager
    from amo1c_sync.amocrm.gateway import AmoCRM
    from amo1c_sync.store import Store
    store = Store(os.environ["T_STORE"])
    tm = TokenManager(store, base_url=os.environ["T_URL"], client_id=os.environ["T_CID"],
                      client_secret=os.environ["T_SECRET"], redirect_uri=os.environ["T_REDIRECT"])
    api = AmoCRM(os.environ["T_URL"], token_manager=tm)
    print("ready", flush=True)
    while not os.path.exists(os.environ["T_GO"]):
        time.sleep(0.005)
    for _ in range(3):
        api.account()
    print("done", flush=True)
""")


def test_given_two_processes_when_the_token_expires_then_exactly_one_refresh_and_no_reuse(emu, store, tmp_path):
    tm = _authorised(emu, store)
    _expire_in_store(store, tm)   # both processes see an expired token and want to refresh
    go = tmp_path / "go"
    env = {**os.environ, "T_STORE": store.url, "T_URL": emu.url, "T_CID": emu.client_id,
           "T_SECRET": emu.client_secret, "T_REDIRECT": emu.redirect_uri, "T_GO": str(go)}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        go.write_text("go")
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()

    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "done" in out
    stats = emu.token_stats()
    assert stats["refresh_reuse_count"] == 0
    assert stats["refresh_count"] == 1
    with store.session() as s:
        assert s.get(OAuthToken, tm.account_key).generation == 2


def test_given_a_long_lived_token_when_listing_then_no_oauth_is_involved(emu, store):
    token = emu.issue_long_lived_token()
    tm = _manager(emu, store, long_lived_token=token)
    emu.create_lead("Иванов", {"Врач": "Ефимова Е.В."})

    leads = list(AmoCRM(emu.url, token_manager=tm).iter_leads_updated_since(0))

    assert [lead["name"] for lead in leads] == ["Иванов"]
    assert tm.status() == {"mode": "long_lived", "account": tm.account_key, "has_token": True}
    assert emu.token_stats()["refresh_count"] == 0


def test_given_a_rejected_long_lived_token_when_calling_then_fatal_says_make_a_new_one(emu, store):
    tm = _manager(emu, store, long_lived_token="ll.not-a-token-amocrm-knows")
    with pytest.raises(FatalError) as exc:
        AmoCRM(emu.url, token_manager=tm).account()
    assert "long-lived" in str(exc.value)
    assert "long_lived_token" in exc.value.action
