"""The request path over HTTP against the emulators' faults: the "was it sent" rule for POSTs, a
passing fault retried, and the metrics hook seeing every try."""

from __future__ import annotations

import pytest

from amo1c_sync.amocrm.auth import TokenManager
from amo1c_sync.amocrm.gateway import AmoCRM
from amo1c_sync.errors import RetriableError
from amo1c_sync.onec import OneC
from amo1c_sync.store import Store

FAST = dict(backoff_base=0.001, backoff_max=0.01)


@pytest.fixture
def seen():
    return []


@pytest.fixture
def amo(amo_emu, sqlite_url, seen):
    store = Store(sqlite_url)
    store.upgrade()
    tokens = TokenManager(store, base_url=amo_emu.url, long_lived_token=amo_emu.issue_long_lived_token())
    yield AmoCRM(amo_emu.url, token_manager=tokens, on_response=lambda *a: seen.append(a), **FAST)
    store.dispose()


def posts(emu, path):
    return [e for e in emu.requests()["log"] if e["method"] == "POST" and e["path"].startswith(path)]


def test_given_the_answer_to_a_notes_post_lost_after_commit_when_noting_then_it_is_not_sent_twice(amo_emu, amo):
    lead = amo_emu.create_lead("Пациент")
    amo_emu.add_fault(count=1, status=None, drop=True, phase="after", path_prefix="/api/v4/leads/notes")

    with pytest.raises(RetriableError):
        amo.add_notes([(lead, "Заявка № 219")])

    assert amo_emu.lead(lead)["notes"] == ["Заявка № 219"]   # written once, not duplicated
    assert len(posts(amo_emu, "/api/v4/leads/notes")) == 1


def test_given_a_429_to_a_notes_post_when_noting_then_it_is_sent_again_and_written_once(amo_emu, amo, seen):
    lead = amo_emu.create_lead("Пациент")
    amo_emu.add_fault(count=1, status=429, path_prefix="/api/v4/leads/notes")

    assert amo.add_notes([(lead, "Заявка № 219")]).ok == [lead]

    assert amo_emu.lead(lead)["notes"] == ["Заявка № 219"]
    assert [(a[0], a[1], a[2], a[3]) for a in seen] == [("amocrm", "POST", "/api/v4/leads/notes", "429"),
                                                        ("amocrm", "POST", "/api/v4/leads/notes", "200")]


def test_given_a_dropped_answer_to_a_read_when_reading_then_the_hook_sees_the_error_and_the_retry(amo_emu, amo, seen):
    amo_emu.add_fault(count=1, status=None, drop=True, phase="after", path_prefix="/api/v4/account")

    assert amo.account()["id"]

    assert [a[3] for a in seen] == ["error", "200"]


def test_given_the_answer_to_a_1c_create_lost_after_commit_when_creating_then_one_client_exists(onec_emu):
    seen: list[tuple] = []
    gw = OneC(onec_emu.url, onec_emu.username, onec_emu.password, on_response=lambda *a: seen.append(a), **FAST)
    onec_emu.add_fault(count=1, status=None, drop=True, phase="after",
                       path_prefix="/odata/standard.odata/Catalog_Клиенты", method="POST")
    try:
        with pytest.raises(RetriableError, match="dropped the connection"):
            gw.create_client("Петров П.П.")
        assert [c["name"] for c in onec_emu.clients()].count("Петров П.П.") == 1
        assert [a[3] for a in seen] == ["error"]
        assert [c.name for c in gw.find_clients("Петров П.П.")] == ["Петров П.П."]   # rerun finds it
    finally:
        gw.close()
