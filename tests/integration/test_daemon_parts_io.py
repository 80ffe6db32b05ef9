"""The daemon's small parts against the real thing: sd_notify over a datagram socket, the lock
file across two processes, request metrics over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import requests

from amo1c_sync import metrics
from amo1c_sync.amocrm import responses
from amo1c_sync.domain.retry import RequestRetry
from amo1c_sync.transport import Transport
from amo1c_sync.leader import FileLock
from amo1c_sync.sdnotify import Notifier


@pytest.fixture
def dgram(tmp_path):
    path = str(tmp_path / "n.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    yield path, s
    s.close()


def test_given_notify_socket_when_ready_then_systemd_gets_ready_and_status(dgram):
    path, sock = dgram
    n = Notifier(path)
    assert n.ready(status="leader; registration ok")
    msg = sock.recv(4096).decode()
    assert "READY=1" in msg.splitlines()
    assert "STATUS=leader; registration ok" in msg.splitlines()
    assert n.watchdog()
    assert sock.recv(100) == b"WATCHDOG=1"
    assert n.stopping()
    assert sock.recv(100) == b"STOPPING=1"
    assert n.status("a\nb")
    assert sock.recv(100) == b"STATUS=a b"


def test_given_an_abstract_notify_socket_then_it_is_addressed_with_a_nul():
    name = f"amo1c-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    try:
        assert Notifier("@" + name).notify(READY=1)
        assert s.recv(100) == b"READY=1"
    finally:
        s.close()


def test_given_a_held_lock_file_when_another_process_tries_then_it_fails_until_released(tmp_path):
    path = tmp_path / "state.db.lock"
    mine = FileLock(path)
    assert mine.try_acquire()
    assert mine.still_held()
    probe = ("import sys; from amo1c_sync.leader import FileLock; "
             "sys.exit(0 if FileLock(sys.argv[1]).try_acquire() else 3)")
    assert subprocess.run([sys.executable, "-c", probe, str(path)]).returncode == 3
    assert path.read_text().strip() == str(os.getpid())
    mine.release()
    assert subprocess.run([sys.executable, "-c", probe, str(path)]).returncode == 0


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        code = 503 if self.path == "/down" else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_given_a_transport_with_the_metrics_hook_then_requests_are_counted_by_system_method_status():
    srv = HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}"
    sample = metrics.REGISTRY.get_sample_value
    labels_ok = {"system": "testsys", "method": "GET", "status": "200"}
    labels_down = {"system": "testsys", "method": "GET", "status": "503"}
    labels_err = {"system": "testsys", "method": "GET", "status": "error"}
    before = [sample("amo1c_requests_total", lb) or 0 for lb in (labels_ok, labels_down, labels_err)]
    t = Transport(system="testsys", label="test", base_url=url, table=responses.API,
                  policy=RequestRetry(retries=0), on_response=metrics.on_response)
    try:
        t.attempt("GET", "/")
        t.attempt("GET", "/down")
        srv.shutdown()
        srv.server_close()
        assert isinstance(t.attempt("GET", "/", timeout=2).error, requests.ConnectionError)
    finally:
        t.close()
    after = [sample("amo1c_requests_total", lb) or 0 for lb in (labels_ok, labels_down, labels_err)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    assert sample("amo1c_request_duration_seconds_count", {"system": "testsys"}) >= 3
    body, ctype = metrics.render()
    assert b"amo1c_requests_total" in body
    assert ctype.startswith("text/plain")
