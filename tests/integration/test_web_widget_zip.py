"""`amo1c-sync widget build`: the widget.zip amoCRM accepts (issue 8)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from amo1c_sync.cli import main as cli_main
from amo1c_sync.commands.widget import IMAGES, REQUIRED_WIDGET_KEYS, png_size

WIDGET = Path(__file__).resolve().parents[2] / "widget"
SUPPORT = "it@clinic-test.ru"


def test_given_the_shipped_widget_when_built_then_the_zip_has_a_valid_manifest_at_its_root(tmp_path, capsys):
    out = tmp_path / "dist" / "widget.zip"
    assert cli_main(["widget", "build", "--support-email", SUPPORT, "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert names[0] == "manifest.json"  # at the root, not inside a folder
        assert {"script.js", "i18n/ru.json", "i18n/en.json"} <= set(names)
        assert all(not n.startswith("widget/") for n in names)
        manifest = json.loads(zf.read("manifest.json").decode("utf-8"))
        for key in REQUIRED_WIDGET_KEYS:
            assert key in manifest["widget"], key
        assert manifest["widget"]["interface_version"] == 2
        assert manifest["locations"] == ["lcard-1"]
        assert manifest["settings"]["endpoint_url"]["type"] == "text"
        assert manifest["settings"]["secret"]["type"] == "pass"
        for loc in manifest["widget"]["locale"]:
            i18n = json.loads(zf.read(f"i18n/{loc}.json").decode("utf-8"))
            assert i18n["widget"]["name"]
            assert i18n["widget"]["description"]
            assert i18n["settings"]["endpoint_url"]
            assert i18n["settings"]["secret"]
        for name, size in IMAGES.items():
            data = zf.read(f"images/{name}")
            assert len(data) <= 300 * 1024
            p = tmp_path / name
            p.write_bytes(data)
            assert png_size(p) == size, name
        script = zf.read("script.js").decode("utf-8")
        assert "define(['jquery']" in script
        assert "this.callbacks" in script
        assert "Зарегистрировать запись к врачу в 1с" in script


def test_given_two_builds_of_the_same_files_then_the_zips_are_identical(tmp_path):
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    assert cli_main(["widget", "build", "--support-email", SUPPORT, "--out", str(a)]) == 0
    assert cli_main(["widget", "build", "--support-email", SUPPORT, "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()


def _broken_copy(tmp_path: Path, edit) -> Path:
    src = tmp_path / "widget"
    shutil.copytree(WIDGET, src)
    edit(src)
    return src


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda s: _edit_manifest(s, lambda m: m["widget"].pop("short_description")),
     "widget.short_description is required"),
    (lambda s: _edit_manifest(s, lambda m: m["widget"].pop("support")), "widget.support is required"),
    (lambda s: _edit_manifest(s, lambda m: m.update(locations=[])), "locations"),
    (lambda s: (s / "manifest.json").write_text("{not json", encoding="utf-8"), "not valid UTF-8 JSON"),
    (lambda s: (s / "i18n" / "en.json").unlink(), "i18n/en.json: missing"),
    (lambda s: (s / "images" / "logo_min.png").write_bytes((s / "images" / "logo.png").read_bytes()),
     "images/logo_min.png: is (130, 100), must be a 84x84 PNG"),
])
def test_given_a_broken_widget_when_built_then_exit_1_naming_the_problem(tmp_path, monkeypatch, capsys,
                                                                           edit, expected):
    src = _broken_copy(tmp_path, edit)
    monkeypatch.setenv("AMO1C_WIDGET_DIR", str(src))
    out = tmp_path / "widget.zip"
    assert cli_main(["widget", "build", "--support-email", SUPPORT, "--out", str(out)]) == 1
    assert expected in capsys.readouterr().err
    assert not out.exists()


def _edit_manifest(src: Path, change) -> None:
    m = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    change(m)
    (src / "manifest.json").write_text(json.dumps(m), encoding="utf-8")


def test_given_the_installed_command_when_widget_build_then_it_works_from_a_shell(tmp_path):
    out = tmp_path / "widget.zip"
    proc = subprocess.run([sys.executable, "-m", "amo1c_sync", "widget", "build", "--support-email", SUPPORT,
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(io.BytesIO(out.read_bytes())) as zf:
        assert zf.testzip() is None


def test_given_the_script_then_node_parses_it_when_node_is_there():
    node = shutil.which("node")
    if not node:
        pytest.skip("node not installed; the browser test runs the script anyway")
    proc = subprocess.run([node, "--check", str(WIDGET / "script.js")], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("args", "expected"), [
    ([], "widget.support is still a placeholder (https://example.com/amo1c-sync/support, support@example.com)"),
    (["--support-email", "help@example.com"], "still a placeholder (help@example.com)"),
    (["--support-email", "not-an-address"], '--support-email "not-an-address" is not an e-mail address'),
    (["--support-url", "ftp://x"], '--support-url "ftp://x" is not an http(s) address'),
])
def test_given_no_real_support_contact_when_widget_build_then_it_refuses_and_says_what_to_pass(
        tmp_path, capsys, args, expected):
    out = tmp_path / "widget.zip"
    assert cli_main(["widget", "build", *args, "--out", str(out)]) == 1
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_given_a_support_contact_when_widget_build_then_the_zip_carries_it(tmp_path):
    out = tmp_path / "widget.zip"
    assert cli_main(["widget", "build", "--support-email", "it@clinic-test.ru", "--support-url",
                     "https://clinic-test.ru/help", "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as zf:
        support = json.loads(zf.read("manifest.json").decode("utf-8"))["widget"]["support"]
    assert support == {"link": "https://clinic-test.ru/help", "email": "it@clinic-test.ru"}
