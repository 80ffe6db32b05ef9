"""`amo1c-sync init [--dir PATH] [--force]`: the documented example sync.ini, the systemd unit and
empty credential files, written from the installed package (an administrator who installed the
wheel has no checkout to copy them from). It never overwrites a file unless --force: an edited
config is worth more than a fresh example."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from amo1c_sync.config import SECRETS
from amo1c_sync.resources import installed_dir

UNIT_NAME = "amo1c-sync.service"
SHIPPED_EXE = "/opt/amo1c-sync/venv/bin/amo1c-sync"


_CHECKOUT = Path(__file__).resolve().parents[2]
_IN_CHECKOUT = {"amo1c_sync._example": _CHECKOUT, "amo1c_sync._systemd": _CHECKOUT / "systemd"}


def _source(package: str, name: str) -> Path:
    """The file in the source checkout (an editable install), else the copy inside the wheel."""
    folders = [_IN_CHECKOUT[package], installed_dir(package)]
    for folder in folders:
        if folder is not None and (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{name} is not in the installed package ({package}); reinstall amo1c-sync")


def this_executable() -> str:
    """The amo1c-sync entry point of this installation, for the unit's ExecStart."""
    beside = Path(sys.executable).with_name("amo1c-sync")
    if beside.is_file():
        return str(beside)
    return shutil.which("amo1c-sync") or SHIPPED_EXE


def unit_text(executable: str | None = None) -> str:
    text = _source("amo1c_sync._systemd", UNIT_NAME).read_text(encoding="utf-8")
    return text.replace(SHIPPED_EXE, executable or this_executable())


def _write(path: Path, text: str, mode: int, force: bool, done: list[str]) -> None:
    if path.exists() and not force:
        done.append(f"kept     {path} (exists; --force overwrites it)")
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, mode)
    done.append(f"wrote    {path}")


def write_all(target: Path, *, force: bool = False) -> list[str]:
    """sync.ini (0644: it holds no secret), the unit (0644), and credentials/ (0700) with one empty
    0600 file per secret (the unit loads all four; an empty one counts as not set)."""
    done: list[str] = []
    target.mkdir(parents=True, exist_ok=True)
    _write(target / "sync.ini", _source("amo1c_sync._example", "sync.ini").read_text(encoding="utf-8"),
           0o644, force, done)
    _write(target / UNIT_NAME, unit_text(), 0o644, force, done)
    creds = target / "credentials"
    creds.mkdir(mode=0o700, exist_ok=True)
    os.chmod(creds, 0o700)
    for _section, _key, _env, name in SECRETS.values():
        path = creds / name
        if not path.exists():
            _write(path, "", 0o600, False, done)
    return done


def main(args) -> int:
    target = Path(args.dir)
    try:
        done = write_all(target, force=args.force)
    except (OSError, FileNotFoundError) as exc:
        print(f"amo1c-sync init: {exc}", file=sys.stderr)
        return 1
    for line in done:
        print(line)
    config = (target / "sync.ini").resolve()
    print(f"""
next:
  1. edit {config}: [amocrm] base_url, client_id, redirect_uri; [onec] base_url, username
     (`amo1c-sync --config {config} check` names each value still missing)
  2. put the secrets into {(target / 'credentials').resolve()}/ (printf '%s' 'VALUE' > FILE; leave unused ones empty)
  3. the unit expects its config at /etc/amo1c-sync/sync.ini and its credentials beside it:
       install -m 0644 {(target / UNIT_NAME).resolve()} /etc/systemd/system/{UNIT_NAME}
       systemd-analyze verify /etc/systemd/system/{UNIT_NAME} && systemctl daemon-reload""")
    return 0
