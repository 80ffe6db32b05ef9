"""The retry policy (domain/retry.py) and its [retry] section in sync.ini."""

from __future__ import annotations

from pathlib import Path

import pytest

from amo1c_sync.config import load_settings
from amo1c_sync.domain.retry import ItemRetry, RequestRetry, RetryPolicy, backoff_seconds
from amo1c_sync.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sync.ini"
    p.write_text(text, encoding="utf-8")
    p.chmod(0o600)
    return p


def test_given_no_jitter_when_asking_request_delays_then_they_double_up_to_the_cap():
    r = RequestRetry(retries=6, backoff_base=0.5, backoff_max=3, jitter=False)
    assert [r.delay(n) for n in range(1, 7)] == [0.5, 1, 2, 3, 3, 3]
    assert r.attempts == 7


def test_given_jitter_when_asking_request_delays_then_each_is_a_fraction_of_the_cap():
    r = RequestRetry(backoff_base=1, backoff_max=10, jitter=True)
    assert r.delay(3, rand=lambda: 0.25) == 1.0
    assert r.delay(9, rand=lambda: 0.5) == 5.0


def test_given_item_numbers_when_asking_then_delay_and_give_up_follow_them():
    item = ItemRetry(backoff_base=60, backoff_max=3600, max_attempts=3)
    assert [item.delay(n) for n in range(0, 9)] == [0, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert [item.gives_up(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    assert not ItemRetry(max_attempts=0).gives_up(10_000)
    assert backoff_seconds(5, 60, 3600) == item.delay(5)


@pytest.mark.parametrize("make", [lambda: RequestRetry(retries=-1), lambda: RequestRetry(backoff_base=0),
                                  lambda: ItemRetry(max_attempts=-2), lambda: ItemRetry(backoff_max=0)])
def test_given_impossible_numbers_when_building_a_policy_then_it_refuses(make):
    with pytest.raises(ValueError, match="must not be negative|must be greater than 0"):
        make()


def test_given_the_shipped_sync_ini_when_loaded_then_the_policy_has_the_documented_defaults():
    s = load_settings(ROOT / "sync.ini")
    assert s.retry.policy() == RetryPolicy()
    assert (s.sync.retry_backoff_base, s.sync.retry_backoff_max, s.sync.max_attempts) == (60, 3600, 0)


def test_given_a_retry_section_when_loaded_then_both_levels_take_its_numbers(tmp_path):
    s = load_settings(write(tmp_path, "[retry]\nrequest_retries = 2\nrequest_backoff_base = 250ms\n"
                                      "request_backoff_max = 4s\nrequest_jitter = no\n"
                                      "item_backoff_base = 5m\nitem_backoff_max = 2h\nitem_max_attempts = 7\n"))
    policy = s.retry.policy()
    assert policy.request == RequestRetry(retries=2, backoff_base=0.25, backoff_max=4, jitter=False)
    assert policy.item == ItemRetry(backoff_base=300, backoff_max=7200, max_attempts=7)
    # the old [sync] names mirror the numbers in force until every reader uses the policy
    assert (s.sync.retry_backoff_base, s.sync.retry_backoff_max, s.sync.max_attempts) == (300, 7200, 7)


def test_given_the_old_sync_names_when_loaded_then_they_set_the_item_level(tmp_path):
    s = load_settings(write(tmp_path, "[sync]\nretry_backoff_base = 2s\nretry_backoff_max = 30s\n"
                                      "max_attempts = 4\n"))
    assert s.retry.policy().item == ItemRetry(backoff_base=2, backoff_max=30, max_attempts=4)


@pytest.mark.parametrize(("text", "expected"), [
    ("[retry]\nrequest_retries = many\n", '[retry] request_retries: "many" is not a whole number'),
    ("[retry]\nrequest_retries = -1\n", "[retry] request_retries: -1 must not be negative"),
    ("[retry]\nrequest_retries = 50\n", "[retry] request_retries: 50 is too many; use 0 to 20"),
    ("[retry]\nrequest_backoff_base = 0s\n", '[retry] request_backoff_base: "0s" must be greater than 0'),
    ("[retry]\nrequest_backoff_max = soon\n", '[retry] request_backoff_max: "soon" is not a duration'),
    ("[retry]\nrequest_jitter = maybe\n", '[retry] request_jitter: "maybe" is not a yes/no value'),
    ("[retry]\nitem_backoff_base = 2h\nitem_backoff_max = 1h\n",
     "[retry] item_backoff_max: 3600 s is less than item_backoff_base (7200 s); use at least 7200s"),
    ("[retry]\nitem_max_attempts = -3\n", "[retry] item_max_attempts: -3 must not be negative"),
    ("[retry]\nattempts = 3\n", "[retry] attempts: unknown key; valid keys are request_retries"),
    ("[sync]\nmax_attempts = 3\n[retry]\nitem_max_attempts = 5\n",
     "[sync] max_attempts: this is the old name of [retry] item_max_attempts, which is also set; "
     "keep only [retry] item_max_attempts"),
])
def test_given_a_bad_retry_value_when_loaded_then_the_message_names_file_section_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)
