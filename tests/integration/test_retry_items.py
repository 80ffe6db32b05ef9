"""The one retry record: a passing fault backs off, an item error and given-up retries wait for a change."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from amo1c_sync.domain.retry import ItemRetry
from amo1c_sync.store import retry as retries

NOW = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
POLICY = ItemRetry(backoff_base=60, backoff_max=3600, max_attempts=3)


def _fail(store, *, retriable=True, version="100"):
    with store.session() as s:
        item = retries.record_failure(s, retries.REGISTRATION, 7, error="boom", code="http:400",
                                      retriable=retriable, version=version, policy=POLICY, now=NOW)
        s.flush()
        s.expunge(item)
    return item


def test_given_a_passing_fault_when_recorded_then_it_backs_off_and_is_deferred_until_then(sqlite_store):
    item = _fail(sqlite_store)
    assert (item.state, item.attempts, item.next_attempt_at) == ("retrying", 1, NOW + timedelta(seconds=60))
    assert retries.decide(item, now=NOW, changed=False) == "deferred"
    assert retries.decide(item, now=NOW + timedelta(seconds=61), changed=False) == "due"
    assert _fail(sqlite_store).next_attempt_at == NOW + timedelta(seconds=120)


def test_given_an_item_error_when_recorded_then_it_waits_for_a_change_and_never_for_time(sqlite_store):
    item = _fail(sqlite_store, retriable=False)
    assert (item.state, item.next_attempt_at, item.code) == ("item_error", None, "http:400")
    assert retries.decide(item, now=NOW + timedelta(days=30), changed=False) == "waiting"
    assert retries.decide(item, now=NOW, changed=True) == "due"


def test_given_max_attempts_when_reached_then_given_up_waits_for_a_change(sqlite_store):
    for _ in range(3):
        item = _fail(sqlite_store)
    assert (item.state, item.attempts, item.next_attempt_at) == ("given_up", 3, None)
    assert retries.decide(item, now=NOW + timedelta(days=1), changed=False) == "waiting"


def test_given_a_success_when_cleared_then_no_record_is_left(sqlite_store):
    _fail(sqlite_store)
    with sqlite_store.session() as s:
        retries.clear(s, retries.REGISTRATION, [7])
    with sqlite_store.session() as s:
        assert retries.get(s, retries.REGISTRATION, 7) is None
        assert retries.decide(None, now=NOW, changed=False) == "due"
