"""The registration cursor's rule: advance only past the leading run of handled items."""

from amo1c_sync.store.cursors import LeadingRun


def test_given_all_items_handled_when_advancing_then_it_reaches_the_last():
    run = LeadingRun(100)
    for pos in (101, 105, 103):
        run.handled(pos)
    assert run.value == 105


def test_given_an_unhandled_item_when_later_ones_are_handled_then_it_stops_before_it():
    run = LeadingRun(100)
    run.handled(101)
    run.unhandled()
    run.handled(110)
    assert run.value == 101


def test_given_items_older_than_the_cursor_when_handled_then_it_never_goes_back():
    run = LeadingRun(100)
    run.handled(90)
    assert run.value == 100
