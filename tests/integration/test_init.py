"""`amo1c-sync init`: an administrator who installed the wheel (no checkout) gets the documented
example sync.ini, the unit and empty credential files, and nothing they edited is overwritten."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _init(*args: str, cwd: Path, python: str = sys.executable, env: dict | None = None):
    return subprocess.run([python, "-m", "amo1c_sync", "init", *args], capture_output=True, text=True,
                          timeout=60, cwd=str(cwd), env=env)


def test_given_a_directory_when_init_runs_then_the_example_the_unit_and_credentials_are_written(tmp_path):
    r = _init("--dir", str(tmp_path / "etc"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    etc = tmp_path / "etc"
    assert (etc / "sync.ini").read_text(encoding="utf-8") == (ROOT / "sync.ini").read_text(encoding="utf-8")
    unit = (etc / "amo1c-sync.service").read_text()
    assert f"ExecStart={Path(sys.executable).with_name('amo1c-sync')} --config /etc/amo1c-sync/sync.ini run" in unit
    creds = etc / "credentials"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    assert sorted(p.name for p in creds.iterdir()) == ["amocrm_client_secret", "amocrm_long_lived_token",
                                                        "http_secret", "onec_password"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 and p.read_text() == "" for p in creds.iterdir())
    assert "next:" in r.stdout
    assert "check" in r.stdout


def test_given_an_edited_config_when_init_runs_again_then_it_is_kept_unless_forced(tmp_path):
    assert _init("--dir", str(tmp_path), cwd=tmp_path).returncode == 0
    (tmp_path / "sync.ini").write_text("[amocrm]\nbase_url = https://clinic.amocrm.ru\n", encoding="utf-8")
    (tmp_path / "credentials" / "onec_password").write_text("kept-secret")
    again = _init("--dir", str(tmp_path), cwd=tmp_path)
    assert again.returncode == 0
    assert "kept" in again.stdout
    assert "clinic.amocrm.ru" in (tmp_path / "sync.ini").read_text(encoding="utf-8")
    forced = _init("--dir", str(tmp_path), "--force", cwd=tmp_path)
    assert forced.returncode == 0
    assert "example.amocrm.ru" in (tmp_path / "sync.ini").read_text(encoding="utf-8")
    assert (tmp_path / "credentials" / "onec_password").read_text() == "kept-secret"  # never a secret


def test_given_the_wheel_installed_without_a_checkout_when_init_runs_then_it_writes_from_the_package(tmp_path):
    wheels = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                   check=True, timeout=300)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                    str(next(wheels.glob("amo1c_sync-*.whl")))], check=True, timeout=300)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from amo1c_sync.commands import init; "
            "assert 'site' in str(init._source('amo1c_sync._example', 'sync.ini')); "
            "print('\\n'.join(init.write_all(__import__('pathlib').Path(sys.argv[2]))))")
    r = subprocess.run([sys.executable, "-c", code, str(site), str(tmp_path / "out")], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    example = (ROOT / "sync.ini").read_text(encoding="utf-8")
    assert (tmp_path / "out" / "sync.ini").read_text(encoding="utf-8") == example
    assert "[Service]" in (tmp_path / "out" / "amo1c-sync.service").read_text()


@pytest.mark.parametrize("bad", ["/proc/amo1c-init-cannot-be-here"])
def test_given_a_directory_that_cannot_be_written_when_init_runs_then_one_line_says_so(tmp_path, bad):
    r = _init("--dir", bad, cwd=tmp_path)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "amo1c-sync init:" in r.stderr
