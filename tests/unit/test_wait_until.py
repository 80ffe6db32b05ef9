"""The rig's wait: what it retries, when it reads its message."""

import pytest

from tests.support import wait_until


class Replaced(Exception):
    """Stands in for a browser's StaleElementReferenceException."""


def test_given_an_ignored_error_then_the_wait_retries_until_the_predicate_holds():
    calls = []

    def predicate():
        calls.append(1)
        if len(calls) < 3:
            raise Replaced("the element was re-rendered")
        return "ready"

    assert wait_until(predicate, timeout=5, interval=0, ignoring=(Replaced,)) == "ready"
    assert len(calls) == 3


def test_given_an_error_not_ignored_then_it_propagates_at_once():
    def predicate():
        raise Replaced("not asked to ignore this")

    with pytest.raises(Replaced):
        wait_until(predicate, timeout=5, interval=0)


def test_given_a_message_function_then_it_is_read_only_on_timeout_and_may_itself_fail():
    read = []

    def describe():
        read.append(1)
        raise Replaced("the state is being re-rendered too")

    assert wait_until(lambda: True, message=describe, ignoring=(Replaced,)) is True
    assert read == []
    with pytest.raises(AssertionError, match="could not be read: Replaced"):
        wait_until(lambda: False, timeout=0, interval=0, message=describe, ignoring=(Replaced,))
    assert read == [1]
