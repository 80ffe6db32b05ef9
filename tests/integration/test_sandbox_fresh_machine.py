"""`sandbox` as a new user meets it: one form for dates, numbers and money; a daemon child that
never outlives the story; `serve` that talks to a person on a terminal and answers what it shows."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest
import requests


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie no longer runs; /proc tells
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _poll(what, probe, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def test_given_the_story_when_told_then_dates_numbers_and_money_have_one_form_each():
    proc = subprocess.run([sys.executable, "-m", "amo1c_sync", "sandbox"], capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "2021-12-22" not in out
    assert "T09:05" not in out
    assert "09:05:00" not in out
    assert not re.search(r"№ 0\d", out), out
    assert "150,00" not in out
    assert "150.00" not in out
    assert "22.12.2021 9:05" in out
    assert "№ 219" in out
    assert "150 ₽" in out
    assert "paid" in out
    assert "temporary directory" in out
    assert "removed" in out
    assert "--keep" in out


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_given_sandbox_keep_when_the_parent_is_ended_then_the_daemon_child_ends_too(how):
    proc = subprocess.Popen([sys.executable, "-m", "amo1c_sync", "sandbox", "--keep"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pid = None
        for line in proc.stdout:
            m = re.search(r"daemon pid (\d+)", line)
            if m:
                pid = int(m.group(1))
                break
        assert pid
        assert _alive(pid)
        proc.send_signal(how)
        proc.wait(timeout=60)
        _poll(f"the daemon child {pid} to end after {how.name} to its parent", lambda: not _alive(pid))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_given_sandbox_serve_on_a_terminal_when_started_then_it_speaks_plainly_and_its_control_addresses_answer():
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "amo1c_sync", "sandbox", "serve"],
                            stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, close_fds=True)
    os.close(slave)
    text = ""
    try:
        deadline = time.monotonic() + 60
        while "stops both" not in text and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                text += os.read(master, 4096).decode("utf-8", "replace")
        assert "Ctrl-C" in text, text
        assert not text.lstrip().startswith("{"), text
        for url in re.findall(r"control: (\S+)", text):
            index = requests.get(url, timeout=5)
            assert index.status_code == 200, url
            assert index.json()["routes"], url
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        os.close(master)


def test_given_sandbox_serve_fresh_when_started_then_it_prints_what_sync_ini_needs():
    proc = subprocess.Popen([sys.executable, "-m", "amo1c_sync", "sandbox", "serve", "--fresh"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        creds = info["credentials"]
        assert creds["client_id"]
        assert creds["redirect_uri"]
        assert creds["onec_username"]
        fields = requests.get(info["amocrm_control"] + "fields", timeout=5).json()
        assert fields == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
