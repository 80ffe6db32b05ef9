"""The CLI as a process on a sync.ini a person really types: one line naming the section and key,
exit 2, no traceback; and its help lists every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sync.ini"
    p.write_text(text, encoding="utf-8")
    p.chmod(0o600)
    return p


def test_given_a_broken_ini_when_check_runs_then_one_line_names_section_and_key_and_exit_is_nonzero(tmp_path):
    path = write(tmp_path, "[sync]\npayments_interval = 5x\n")
    proc = subprocess.run([sys.executable, "-m", "amo1c_sync", "--config", str(path), "check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "[sync] payments_interval" in lines[0]
    assert "use 30s, 5m or 1h" in lines[0]


def test_given_a_malformed_ini_when_the_daemon_starts_then_it_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = write(tmp_path, "[sync]\nregistration_interval = every 15 seconds\n")
    proc = subprocess.run([sys.executable, "-m", "amo1c_sync", "--config", str(path), "run"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("config error: ")
    assert '[sync] registration_interval: "every 15 seconds" is not a duration' in lines[0]


def test_given_the_cli_when_asked_for_help_then_every_command_is_listed():
    proc = subprocess.run([sys.executable, "-m", "amo1c_sync", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for cmd in ("run", "once", "status", "trace", "slots", "check", "auth", "db", "sandbox"):
        assert f"    {cmd} " in proc.stdout, cmd
