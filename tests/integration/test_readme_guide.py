"""The README's set-up guide, followed step by step against `amo1c-sync sandbox serve --fresh`: its
```ini blocks are what the administrator types into sync.ini, its printf lines the credential
files, and every `amo1c-sync` line of its ```sh blocks is run in order and must succeed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
ETC = "/etc/amo1c-sync"


def guide() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Set-up guide")
    return text[start:text.index("\n## ", start + 1)]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", guide(), flags=re.S)


@pytest.fixture
def fresh_sandbox():
    proc = subprocess.Popen([sys.executable, "-m", "amo1c_sync", "sandbox", "serve", "--fresh"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _typed(value: str, info: dict) -> str:
    """What the administrator types for the guide's placeholder or example value."""
    c = info["credentials"]
    if value.startswith("https://yourclinic.amocrm.ru"):
        return info["amocrm"]
    if "/odata/standard.odata" in value:
        return info["onec"]
    for placeholder, real in (("ID интеграции", c["client_id"]), ("redirect URI", c["redirect_uri"]),
                              ("Секретный ключ", c["client_secret"]), ("1C user", c["onec_username"]),
                              ("1C password", c["onec_password"])):
        if value.startswith("<") and placeholder in value:
            return real
    raise AssertionError(f"the test does not know what to type for {value!r}")


def _edit_ini(path: Path, block: str, info: dict) -> None:
    """Set each key of the guide's [section] block in the example, as an editor would."""
    text = path.read_text(encoding="utf-8")
    section = None
    for line in block.splitlines():
        if m := re.match(r"^\[(\w+)\]$", line.strip()):
            section = m.group(1)
        elif "=" in line:
            key, value = (p.strip() for p in line.split("=", 1))
            pattern = re.compile(rf"(\[{section}\][^\[]*?^){re.escape(key)} =[^\n]*", re.S | re.M)
            assert pattern.search(text), f"the example has no [{section}] {key}"
            line = f"{key} = {_typed(value, info)}"
            text = pattern.sub(lambda m, line=line: f"{m.group(1)}{line}", text, count=1)
    path.write_text(text, encoding="utf-8")


def _commands() -> list[str]:
    return [line.strip() for b in blocks("sh") for line in b.splitlines()
            if line.strip().startswith(("amo1c-sync ", "printf "))]


def test_given_a_new_clinic_when_the_readme_guide_is_followed_then_every_command_succeeds_and_it_runs(
        fresh_sandbox, tmp_path):
    info, etc = fresh_sandbox, tmp_path / "etc"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMO1C_", "STATE_DIRECTORY"))}
    env["CREDENTIALS_DIRECTORY"] = str(etc / "credentials")  # as the unit hands them over
    shown = " ".join(_commands())
    for step in ("init", "auth --code", "setup amocrm", "setup 1c", "check", "once"):
        assert f"amo1c-sync{' --config ' + ETC + '/sync.ini' if step != 'init' else ''} {step}" in shown, step
    ran, filled = [], False
    for line in _commands():
        line, _, comment = line.replace(ETC, str(etc)).partition("  #")
        line, allowed = line.strip(), (0, 1) if "exit 1" in comment else (0,)
        if line.startswith("printf "):
            m = re.match(r"printf '%s' '(<[^']+>)' > (\S+)$", line)
            assert m, line
            Path(m.group(2)).write_text(_typed(m.group(1), info))
            continue
        if "sync.ini" in line and not filled:
            for block in blocks("ini"):  # steps 2 and 3: the administrator edits sync.ini
                _edit_ini(etc / "sync.ini", block, info)
            filled = True
        args = line.split()[1:]
        if "CODE" in args:
            code = requests.post(info["amocrm_control"] + "oauth/code", timeout=10).json()["code"]
            args[args.index("CODE")] = code
        r = subprocess.run([sys.executable, "-m", "amo1c_sync", *args], capture_output=True, text=True,
                           timeout=180, cwd=str(tmp_path), env=env)
        assert r.returncode in allowed, f"{line}\n{r.stdout}\n{r.stderr}"
        assert "Traceback" not in r.stderr
        ran.append(line)
    assert any(r.endswith(" check") for r in ran)
    assert any(r.endswith(" once") for r in ran)
    fields = requests.get(info["amocrm_control"] + "fields", timeout=10).json()
    assert {f["name"] for f in fields} >= {"Дата записи к врачу", "Врач", "Время записи", "Сумма1С",
                                            "Зарегистрировать в 1С"}
    clients = requests.get(info["onec_control"] + "clients", timeout=10).json()
    assert "Клиент из AmoCRM" in [c["name"] for c in clients]
    with zipfile.ZipFile(tmp_path / "widget.zip") as zf:
        assert "it@yourclinic.ru" in zf.read("manifest.json").decode("utf-8")
