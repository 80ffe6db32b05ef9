import json
import os
import signal
import subprocess
import sys

import requests


def test_given_a_fresh_machine_when_the_readme_sandbox_command_runs_then_the_seed_story_is_told_and_exit_is_0():
    proc = subprocess.run([sys.executable, "-m", "amo1c_sync", "sandbox"], capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "doctors: Ефимова Е.В., Ишаева М.И." in out
    assert "free times of Ефимова Е.В.: 8:15, 8:20, 8:25, 8:30, 8:35, 8:40 …" in out
    # the lead's contact has the caller's phone and no name: a new 1C client with that phone (F8)
    assert "«Заявка» № 219 — client «+7 911 123-45-67», doctor «Ефимова Е.В.», 22.12.2021 9:05" in out
    assert ("note «Создан документ Заявка № 219\nКлиента с телефоном +7 911 123-45-67 в 1С нет, а имени нет ни в "
            "сделке, ни в контакте — создан новый клиент «+7 911 123-45-67» с этим телефоном.") in out
    assert "9:05 is no longer free" in out
    assert "the lead shows it paid: Бюджет 150 ₽, «Сумма1С» 150 ₽" in out
    assert "The story happened as the clinic told it." in out
    assert "sandbox-secret" not in out + proc.stderr
    assert "пароль-песочницы" not in out + proc.stderr


def test_given_sandbox_serve_when_a_config_is_written_then_once_works_against_it_and_sigterm_stops_it(tmp_path):
    ini = tmp_path / "sync.ini"
    proc = subprocess.Popen([sys.executable, "-m", "amo1c_sync", "sandbox", "serve", "--write-config", str(ini)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert requests.get(info["amocrm_control"] + "requests", timeout=5).status_code == 200
        assert oct(os.stat(ini).st_mode & 0o777) == "0o600"
        once = subprocess.run([sys.executable, "-m", "amo1c_sync", "--config", str(ini), "once", "registration"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert once.returncode == 0, once.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
