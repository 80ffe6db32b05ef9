import json
import subprocess
import sys

from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator


def _ini(tmp_path, emu):
    path = tmp_path / "sync.ini"
    path.write_text(f"""[amocrm]
base_url = {emu.url}
client_id = {emu.client_id}
client_secret = {emu.client_secret}
redirect_uri = {emu.redirect_uri}
[store]
url = sqlite:///{tmp_path / 'state.db'}
""", encoding="utf-8")
    path.chmod(0o600)
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "amo1c_sync", "--log-format", "json", *args],
                          capture_output=True, text=True, timeout=60)


def test_given_a_fresh_install_when_auth_code_is_exchanged_then_status_shows_a_token_and_no_secret(tmp_path):
    with AmoCRMEmulator() as emu:
        ini = _ini(tmp_path, emu)
        before = _cli("--config", str(ini), "auth", "--status")
        assert before.returncode == 1
        assert '"has_token": false' in before.stdout

        code = emu.new_auth_code()["code"]
        done = _cli("--config", str(ini), "auth", "--code", code)
        assert done.returncode == 0, done.stderr
        state = json.loads(done.stdout)
        assert state["has_token"] is True
        assert state["generation"] == 1
        assert code not in done.stdout + done.stderr
        assert emu.client_secret not in done.stdout + done.stderr
        assert emu.token_stats()["code_exchanges"] == 1


def test_given_a_used_code_when_exchanged_again_then_the_error_says_what_to_do(tmp_path):
    with AmoCRMEmulator() as emu:
        ini = _ini(tmp_path, emu)
        code = emu.new_auth_code()["code"]
        assert _cli("--config", str(ini), "auth", "--code", code).returncode == 0
        again = _cli("--config", str(ini), "auth", "--code", code)
        assert again.returncode == 1
        assert "error:" in again.stderr
        assert "code" in again.stderr.lower()
        assert code not in again.stderr


def test_given_the_code_exchange_answer_is_lost_when_auth_code_runs_then_a_clear_error_says_what_to_do(tmp_path):
    with AmoCRMEmulator() as emu:
        ini = _ini(tmp_path, emu)
        code = emu.new_auth_code()["code"]
        emu.add_fault(path_prefix="/oauth2/access_token", phase="after", status=None, drop=True)
        lost = _cli("--config", str(ini), "auth", "--code", code)
        assert lost.returncode == 1
        assert "Traceback" not in lost.stderr
        assert "did not confirm the code exchange" in lost.stderr
        assert "what to do: run `amo1c-sync auth --status`" in lost.stderr
        assert code not in lost.stdout + lost.stderr
        assert emu.token_stats()["code_exchanges"] == 1
