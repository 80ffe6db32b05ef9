"""A token refresh whose answer is lost, late or never sent, against the amoCRM emulator (which
counts every reuse of a refresh token) with the pair in a real store: a refresh token is never sent
twice; the outcome is the new pair in the store, the old one kept when amoCRM surely did not act,
or a clear "re-authorise" state; a SIGKILL mid-refresh ends the same way; a stop waits for a
refresh in flight."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone

import pytest

from amo1c_sync import config
from amo1c_sync.amocrm.auth import IN_FLIGHT, TokenManager
from amo1c_sync.daemon import Daemon
from amo1c_sync.errors import FatalError, RetriableError
from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.store.models import OAuthToken
from tests.support import wait_until

TOKEN_PATH = "/oauth2/access_token"


@pytest.fixture
def emu():
    with AmoCRMEmulator(rate_limit=1000) as e:
        yield e


def _manager(emu, store, *, base_url: str | None = None, **kw) -> TokenManager:
    return TokenManager(store, base_url=base_url or emu.url, client_id=emu.client_id,
                        client_secret=emu.client_secret, redirect_uri=emu.redirect_uri,
                        account_key="clinic", **kw)


def _authorised_and_due(emu, store) -> TokenManager:
    """A stored pair whose access token is past its refresh margin: the next use refreshes."""
    tm = _manager(emu, store)
    tm.exchange_code(emu.new_auth_code()["code"])
    with store.session() as s:
        s.get(OAuthToken, "clinic").expires_at = datetime.now(timezone.utc) - timedelta(seconds=1)
    return tm


def _row(store) -> OAuthToken:
    with store.session() as s:
        row = s.get(OAuthToken, "clinic")
        s.expunge(row)
        return row


def _token_requests(emu) -> int:
    return emu.requests()["counts"].get(f"POST {TOKEN_PATH}", 0)


def _assert_reauthorise(exc: pytest.ExceptionInfo, emu, store) -> None:
    assert exc.value.system == "amocrm"
    assert "amo1c-sync auth --code" in exc.value.action
    assert "was lost" in str(exc.value)
    assert "not sent again" in str(exc.value)
    status = _manager(emu, store).status()
    assert "was lost" in status["revoked_reason"]
    assert "auth --code" in status["action"]


@pytest.mark.parametrize("fault", [
    pytest.param({"drop": True}, id="connection-cut-after-amocrm-rotated"),
    pytest.param({"status": 504}, id="gateway-timeout-after-amocrm-rotated"),
    pytest.param({"delay_ms": 1500}, id="answer-later-than-token_timeout"),
])
def test_given_amocrm_rotated_but_its_answer_is_lost_when_refreshing_then_the_token_is_never_sent_again_and_reauthorise_is_asked(  # noqa: E501 - the name says it all
        emu, store, fault):
    tm = _authorised_and_due(emu, store)
    emu.add_fault(path_prefix=TOKEN_PATH, phase="after", **{"status": None, **fault})

    with pytest.raises(FatalError) as exc:
        _manager(emu, store, token_timeout=0.5).access_token()

    wait_until(lambda: emu.token_stats()["refresh_count"] == 1, message="amoCRM carrying the refresh out")
    _assert_reauthorise(exc, emu, store)
    # every later attempt, by any process, stops at once: the spent token is not sent again
    sent = _token_requests(emu)
    for _ in range(2):
        with pytest.raises(FatalError):
            _manager(emu, store).access_token()
    assert _token_requests(emu) == sent
    assert emu.token_stats()["refresh_reuse_count"] == 0

    # the README's way out: a new authorization code
    tm.exchange_code(emu.new_auth_code()["code"])
    assert _manager(emu, store).access_token()
    assert _row(store).revoked_reason is None


@pytest.mark.parametrize("fault", [
    pytest.param({"status": 503}, id="503-before-amocrm-acted"),
    pytest.param({"status": 429}, id="429-before-amocrm-acted"),
])
def test_given_amocrm_refused_the_refresh_unprocessed_when_refreshing_then_the_token_is_kept_and_the_next_try_rotates_it(  # noqa: E501 - the name says it all
        emu, store, fault):
    _authorised_and_due(emu, store)
    before = _row(store)
    emu.add_fault(path_prefix=TOKEN_PATH, **fault)

    with pytest.raises(RetriableError):
        _manager(emu, store).access_token()

    kept = _row(store)
    assert kept.revoked_reason is None
    assert kept.refresh_token == before.refresh_token
    assert _manager(emu, store).access_token() == _row(store).access_token
    assert _row(store).generation == before.generation + 1
    assert emu.token_stats()["refresh_count"] == 1
    assert emu.token_stats()["refresh_reuse_count"] == 0


def test_given_amocrm_unreachable_when_refreshing_then_the_token_is_kept_for_the_next_try(emu, store):
    _authorised_and_due(emu, store)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"   # bound, not listening: refused

        with pytest.raises(RetriableError):
            _manager(emu, store, base_url=nowhere).access_token()

    assert _row(store).revoked_reason is None
    _manager(emu, store).access_token()
    assert emu.token_stats()["refresh_count"] == 1
    assert emu.token_stats()["refresh_reuse_count"] == 0


def test_given_a_slow_refresh_in_flight_when_another_thread_needs_a_token_then_it_waits_and_gets_the_new_pair(
        emu, store):
    _authorised_and_due(emu, store)
    emu.add_fault(path_prefix=TOKEN_PATH, phase="after", status=None, delay_ms=1000)
    got: list[str] = []
    first = threading.Thread(target=lambda: got.append(_manager(emu, store).access_token()))
    first.start()
    wait_until(lambda: (_row(store).revoked_reason or "").startswith(IN_FLIGHT), message="the refresh marked")
    second = _manager(emu, store).on_unauthorized("the-expired-token")   # needs a newer one now
    first.join(30)

    assert got == [second] == [_row(store).access_token]
    assert emu.token_stats()["refresh_count"] == 1
    assert emu.token_stats()["refresh_reuse_count"] == 0


_CHILD = textwrap.dedent("""
    import os, sys
    from amo1c_sync.amocrm.auth import TokenManager
    from amo1c_sync.store import Store
    tm = TokenManager(Store(os.environ["T_STORE"]), base_url=os.environ["T_URL"],
                      client_id=os.environ["T_CID"], client_secret=os.environ["T_SECRET"],
                      redirect_uri=os.environ["T_REDIRECT"], account_key="clinic")
    tm.access_token()
""")


def test_given_a_process_killed_while_its_refresh_is_out_when_another_needs_a_token_then_it_is_not_sent_again(
        emu, store):
    _authorised_and_due(emu, store)
    emu.add_fault(path_prefix=TOKEN_PATH, phase="after", status=None, delay_ms=3000)
    env = {**os.environ, "T_STORE": store.url, "T_URL": emu.url, "T_CID": emu.client_id,
           "T_SECRET": emu.client_secret, "T_REDIRECT": emu.redirect_uri}
    child = subprocess.Popen([sys.executable, "-c", _CHILD], env=env)
    try:
        wait_until(lambda: emu.token_stats()["refresh_count"] == 1, timeout=30,
                   message="amoCRM rotating the child's token (its answer held back)")
        assert (_row(store).revoked_reason or "").startswith(IN_FLIGHT)
        child.send_signal(signal.SIGKILL)
        child.wait(10)

        with pytest.raises(FatalError) as exc:
            _manager(emu, store).access_token()
    finally:
        if child.poll() is None:
            child.kill()
    _assert_reauthorise(exc, emu, store)
    assert emu.token_stats()["refresh_reuse_count"] == 0


def test_given_a_refresh_in_flight_when_the_daemon_is_stopped_then_it_waits_for_the_new_pair_to_be_stored(
        emu, store, tmp_path):
    _authorised_and_due(emu, store)
    ini = tmp_path / "sync.ini"
    ini.write_text(f"[store]\nurl = {store.url}\n[amocrm]\nbase_url = {emu.url}\n", encoding="utf-8")
    daemon = Daemon(config.load_settings(ini), store, jobs=[], tick=0.05)
    runner = threading.Thread(target=daemon.run, kwargs={"install_signals": False}, daemon=True)
    runner.start()
    wait_until(lambda: daemon.role == "leader", message="the daemon leading")
    emu.add_fault(path_prefix=TOKEN_PATH, phase="after", status=None, delay_ms=1500)
    order: list[str] = []

    def refresh():
        _manager(emu, store).access_token()
        order.append("pair stored")
    refresher = threading.Thread(target=refresh)
    refresher.start()
    wait_until(lambda: emu.token_stats()["refresh_count"] == 1, message="the refresh out at amoCRM")

    daemon.request_stop()
    runner.join(30)
    order.append("daemon stopped")
    refresher.join(30)

    assert order == ["pair stored", "daemon stopped"]
    assert _row(store).generation == 2
    assert _row(store).revoked_reason is None
