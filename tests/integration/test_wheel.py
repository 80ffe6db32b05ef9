"""What `pip install` (a wheel, not the checkout) must carry: every package, the migrations, the
widget; and what it must not: the test rig."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Built from a copy without build/: setuptools reuses a checkout's build/lib, so modules that
    were moved away since the last build would reappear in the wheel."""
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src") / "amo1c-sync"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        "build", ".venv", "*.egg-info", ".git", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(out), str(src)], check=True, timeout=300)
    return next(out.glob("amo1c_sync-*.whl"))


def test_given_the_wheel_when_listed_then_it_carries_the_migrations_and_the_widget(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "amo1c_sync/_migrations/env.py" in names
    assert "amo1c_sync/_migrations/script.py.mako" in names
    assert any(n.startswith("amo1c_sync/_migrations/versions/0001_") for n in names)
    assert {"amo1c_sync/_widget/manifest.json", "amo1c_sync/_widget/script.js",
            "amo1c_sync/_widget/images/logo.png"} <= names
    # `amo1c-sync init` writes these two; the root is mapped for sync.ini and nothing else
    assert {"amo1c_sync/_example/sync.ini", "amo1c_sync/_systemd/amo1c-sync.service"} <= names
    assert [n for n in names if n.startswith("amo1c_sync/_example/")] == ["amo1c_sync/_example/sync.ini"]


def test_given_the_wheel_when_listed_then_it_has_no_testing_package_and_no_tests(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    rig = [n for n in names if n.startswith(("amo1c_sync/testing/", "tests/"))
           or "/testing/" in n or n.split("/")[0] == "tests"]
    assert rig == []
    assert "amo1c_sync/sandbox/daemon.py" in names  # the sandbox (a user feature) stays


def test_given_the_wheel_installed_elsewhere_when_the_store_is_upgraded_then_migrations_are_found(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, timeout=300)
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "import amo1c_sync.store.db as db; assert 'site' in str(db.MIGRATIONS_DIR), db.MIGRATIONS_DIR;"
            "from amo1c_sync.store import Store; s = Store('sqlite:///' + sys.argv[2]); s.upgrade();"
            "from amo1c_sync.commands.widget import find_widget_dir; print(find_widget_dir())")
    proc = subprocess.run([sys.executable, "-c", code, str(target), str(tmp_path / "state.db")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "_widget" in proc.stdout
