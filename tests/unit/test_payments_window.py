from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from amo1c_sync.domain.payment_window import Window, plan_window
from amo1c_sync.domain.payment_window import slices as _slices

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2021, 12, 22, 6, 30, tzinfo=timezone.utc)  # 09:30 in Moscow
DAY = 86400.0


def window(**kw) -> Window:
    args = dict(now_utc=NOW, tz=MSK, hot_window=3 * DAY, lookback=62 * DAY, full_scan_interval=3600.0,
                last_full_scan=NOW - timedelta(minutes=10), since=None)
    args.update(kw)
    return plan_window(**args)


def test_given_a_recent_full_scan_when_planning_then_the_hot_window_in_local_time():
    w = window()
    assert (w.kind, w.full) == ("hot", False)
    assert w.date_from == datetime(2021, 12, 19, 9, 30)
    assert w.date_to == date(2021, 12, 23)


def test_given_no_full_scan_yet_when_planning_then_the_whole_lookback():
    w = window(last_full_scan=None)
    assert (w.kind, w.full) == ("full", True)
    assert w.date_from == datetime(2021, 10, 21, 9, 30)


def test_given_the_full_scan_interval_passed_when_planning_then_the_whole_lookback():
    assert window(last_full_scan=NOW - timedelta(hours=1)).kind == "full"
    assert window(last_full_scan=NOW - timedelta(minutes=59)).kind == "hot"


def test_given_a_since_date_when_planning_then_the_window_reaches_back_to_it():
    w = window(since=date(2021, 12, 1))
    assert (w.kind, w.full) == ("since", False)
    assert w.date_from == datetime(2021, 12, 1)
    older = window(since=date(2021, 1, 1))
    assert (older.kind, older.full) == ("since", True)


def test_given_a_since_date_inside_the_window_when_planning_then_it_changes_nothing():
    assert window(since=date(2021, 12, 21)).kind == "hot"


def test_given_a_window_when_slicing_then_slices_cover_it_without_gaps():
    w = window(since=date(2021, 12, 1))
    slices = _slices(w, 7)
    assert slices[0][0] == datetime(2021, 12, 1)
    assert slices[-1][1] == datetime(2021, 12, 24)
    assert all(a[1] == b[0] for a, b in zip(slices, slices[1:], strict=False))
    assert all(hi - lo <= timedelta(days=7) for lo, hi in slices)


def test_given_a_tty_when_showing_progress_then_tqdm_else_the_bare_iterable(monkeypatch):
    import io
    import sys

    from amo1c_sync.jobs.payments import _progress

    class FakeTTY(io.StringIO):
        def isatty(self):
            return True

    items = [1, 2, 3]
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert _progress(items, total=3, desc="x", unit="u", enabled=True) is items
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    assert _progress(items, total=3, desc="x", unit="u", enabled=False) is items
    assert list(_progress(items, total=3, desc="1C", unit="week", enabled=True)) == items
    assert "3/3" in tty.getvalue()


def windows(**kw):
    from amo1c_sync.domain.payment_window import plan_windows

    args = dict(now_utc=NOW, tz=MSK, hot_window=3 * DAY, lookback=62 * DAY, full_scan_interval=3600.0,
                last_full_scan=NOW - timedelta(hours=2), since=None, slice_from=None, slice_days=20)
    args.update(kw)
    return plan_windows(**args)


def test_given_a_periodic_full_scan_due_when_planning_then_the_hot_window_and_the_first_slice():
    hot, part = windows()
    assert (hot.kind, part.kind, part.full) == ("hot", "slice", False)
    assert (part.date_from, part.upper()) == (datetime(2021, 10, 21, 9, 30), datetime(2021, 11, 10, 9, 30))


def test_given_a_scan_in_progress_when_planning_then_the_next_slice_and_the_last_one_ends_at_the_hot_window():
    hot, part = windows(last_full_scan=NOW - timedelta(minutes=10), slice_from=datetime(2021, 12, 1, 9, 30))
    assert (part.kind, part.full) == ("slice", True)
    assert (part.date_from, part.upper()) == (datetime(2021, 12, 1, 9, 30), hot.date_from)


def test_given_no_full_scan_yet_or_a_backfill_when_planning_then_one_window_read_at_once():
    assert [w.kind for w in windows(last_full_scan=None)] == ["full"]
    assert [w.kind for w in windows(since=date(2021, 1, 1))] == ["since"]
    assert [w.kind for w in windows(last_full_scan=NOW - timedelta(minutes=10))] == ["hot"]
