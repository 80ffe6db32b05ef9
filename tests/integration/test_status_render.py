"""The readable forms of `status` and `trace` do not crash on full data."""

from __future__ import annotations

from amo1c_sync.commands.status import render as render_status
from amo1c_sync.commands.trace import collect_trace, render as render_trace
from amo1c_sync.config import Settings
from amo1c_sync.jobs import journal
from amo1c_sync.status import collect_status
from amo1c_sync.store.instances import write_heartbeat

from test_status import _fill


def test_given_full_data_then_status_and_trace_read_well(store):
    _fill(store)
    write_heartbeat(store, "leader")
    with store.session() as s:
        journal(s, job="registration", system="1c", action="zayavka.created", lead_id=2, ref="abc",
                message="создан документ «Заявка» № 219")
    text = render_status(collect_status(store, Settings()))
    assert "leader:  " in text
    assert "registration  ok" in text
    assert "1C: no doctor «Петров»" in text
    assert "no base «Заявка»" in text
    assert "generation 4" in text
    tr = render_trace(collect_trace(store, 2))
    assert "registration: failed" in tr
    assert "-> 1C" in tr
    assert "zayavka.created" in tr
