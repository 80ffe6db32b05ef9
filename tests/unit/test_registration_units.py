"""Narrow unit tests of the registration job's pure parts and of the batched «Заявка» read's
packing (the gateway's request path replaced: no socket)."""

from __future__ import annotations

import os
import socket
from datetime import date, time
from types import SimpleNamespace

from amo1c_sync.jobs import registration as job
from amo1c_sync.onec import OneC
from amo1c_sync.onec import query as q

DOCTOR = "17ea7497-3722-57f0-a01b-874c0d221bcc"


def _onec(max_bytes: int) -> tuple[OneC, list]:
    onec = OneC("http://1c.invalid/base/odata/standard.odata", "u", "p", max_target_bytes=max_bytes)
    sent: list = []

    def get_all(query):
        sent.append(query)
        return iter(())

    onec._get_all = get_all  # type: ignore[method-assign]
    return onec, sent


def test_given_many_leads_and_days_when_zayavki_for_then_each_query_fits_and_every_condition_is_asked_once():
    onec, sent = _onec(1500)
    leads = list(range(30000001, 30000061))
    days = [(date(2021, 12, d), DOCTOR) for d in (20, 21, 22)]
    found, booked = onec.zayavki_for(leads, days)
    assert len(sent) > 1
    for query in sent:
        assert q.target_bytes(query.page(onec.page_size, 10**6), onec._prefix_bytes) < 1500
    text = " ".join(str(query.filter) for query in sent)
    assert all(text.count(f"'{lead}'") == 1 for lead in leads)
    assert text.count(DOCTOR) == 3
    assert set(found) == set(leads)
    assert set(booked) == {(d, DOCTOR) for d, _ in days}


def test_given_one_lead_and_its_day_when_zayavki_for_then_one_query():
    onec, sent = _onec(2000)
    onec.zayavki_for([30000001], [(date(2021, 12, 22), DOCTOR)])
    assert len(sent) == 1


def test_given_owners_when_asked_if_gone_then_only_a_dead_process_of_this_host_is():
    host = socket.gethostname()[:40]
    assert not job._gone(f"{host}:{os.getpid()}:abc")             # this process: alive
    assert not job._gone(f"other-host:{2**22 + 7}:abc")           # another host: cannot tell
    assert job._gone(f"{host}:{2**22 + 7}:abc")                   # above pid_max: no such process
    assert not job._gone("garbage")


def test_given_a_zayavka_with_the_asked_values_when_compared_then_same_and_a_changed_time_is_not():
    zay = SimpleNamespace(client_ref="A", doctor_ref="B", day=date(2021, 12, 22), start=time(9, 5),
                          end=time(9, 20))
    values = dict(client_ref="a", doctor_ref="b", day=date(2021, 12, 22), start=time(9, 5), end=time(9, 20))
    assert job._same(zay, values)
    assert not job._same(zay, {**values, "start": time(9, 10)})


def test_given_the_gateways_post_error_when_noted_then_the_note_shows_1cs_answer_not_the_request():
    note = job.post_refused_note("00000000219", "1C answered 500 to POST /odata/x(guid'1')/Post?a=b: "
                                                "Период закрыт")
    assert "№ 219" in note
    assert "ответ 500: Период закрыт" in note
    assert "/odata" not in note
