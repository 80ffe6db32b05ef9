"""systemd/amo1c-sync.service is accepted by `systemd-analyze verify` and well hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "amo1c-sync.service"
MAX_EXPOSURE = 1.5  # systemd-analyze security: 0 = locked down … 10 = exposed; the unit scores 1.1

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze missing (scripts/test-prereqs.sh installs it)")


@pytest.fixture
def unit_here(tmp_path):
    """The shipped unit with ExecStart pointing at this checkout's entry point (verify checks that
    the executable exists)."""
    exe = Path(sys.executable).with_name("amo1c-sync")
    if not exe.exists():
        pytest.skip(f"{exe} not installed (pip install -e .)")
    text = UNIT.read_text().replace("/opt/amo1c-sync/venv/bin/amo1c-sync", str(exe))
    path = tmp_path / "amo1c-sync.service"
    path.write_text(text)
    return path


@pytest.fixture
def unit_from_init(tmp_path):
    """The unit as `amo1c-sync init` installs it (ExecStart: this installation's entry point)."""
    target = tmp_path / "etc"
    r = subprocess.run([sys.executable, "-m", "amo1c_sync", "init", "--dir", str(target)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return target / "amo1c-sync.service"


@pytest.fixture(params=["shipped", "init"])
def unit(request):
    return request.getfixturevalue("unit_here" if request.param == "shipped" else "unit_from_init")


def test_given_the_unit_when_verified_then_systemd_accepts_it(unit):
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "amo1c-sync.service" in line]
    assert r.returncode == 0, r.stdout + r.stderr
    assert not problems, r.stdout + r.stderr


def test_given_the_unit_then_its_exposure_score_is_low(unit):
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert "Invalid syntax" not in out, out
    assert "Unknown key" not in out, out
    m = re.search(r"Overall exposure level for amo1c-sync\.service: (\d+(?:\.\d+)?)", out)
    assert m, out
    assert float(m.group(1)) <= MAX_EXPOSURE, out


def test_given_the_unit_then_it_has_the_required_settings():
    text = UNIT.read_text()
    for line in ("Type=notify", "Restart=on-failure", "StateDirectory=amo1c-sync", "DynamicUser=yes",
                 "ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text, line
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    for cred in ("amocrm_client_secret", "amocrm_long_lived_token", "onec_password", "http_secret"):
        assert f"LoadCredential={cred}:" in text
    # the daemon must finish its stop (75 s) inside the unit's stop timeout
    assert int(re.search(r"^TimeoutStopSec=(\d+)", text, re.M).group(1)) > 75
