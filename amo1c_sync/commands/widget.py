"""`amo1c-sync widget build --out widget.zip`: check the amoCRM widget in widget/ and pack it.

amoCRM takes a zip with manifest.json at its root (not inside a folder), script.js, i18n/<locale>.json
for each locale in the manifest and the logos in images/ at the documented sizes, each at most
300 KB. The widget's source folder is $AMO1C_WIDGET_DIR, else widget/ of the source checkout, else
./widget, else the copy installed with the package.

The shipped manifest names no real support contact (amoCRM shows it to every user of the widget):
the build takes it from --support-email / --support-url and refuses to pack a placeholder.
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from amo1c_sync.resources import installed_dir

REQUIRED_WIDGET_KEYS = ("name", "description", "short_description", "version", "interface_version",
                        "init_once", "locale", "installation", "support")
SETTING_TYPES = {"text", "pass", "custom", "users", "users_lp"}
# amoCRM's documented logo sizes (width, height)
IMAGES = {
    "logo.png": (130, 100),
    "logo_main.png": (400, 272),
    "logo_medium.png": (240, 84),
    "logo_min.png": (84, 84),
    "logo_small.png": (108, 108),
}
MAX_IMAGE_BYTES = 300 * 1024
# a fixed timestamp keeps the zip byte-identical between builds of the same files
_ZIP_TIME = (2021, 12, 22, 9, 5, 0)
_PLACEHOLDER_HOSTS = re.compile(r"(^|[@.])example\.(com|org|net)$|^localhost$", re.IGNORECASE)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class WidgetError(Exception):
    """The widget cannot be built; ``problems`` lists every reason at once."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def find_widget_dir() -> Path:
    env = os.environ.get("AMO1C_WIDGET_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "widget", Path.cwd() / "widget"]
    installed = installed_dir("amo1c_sync._widget")  # the copy inside the wheel
    if installed is not None:
        candidates.append(installed)
    for c in candidates:
        if (c / "manifest.json").is_file():
            return c
    raise WidgetError(["no widget folder with manifest.json; looked in: "
                       + ", ".join(str(c) for c in candidates) + " (set AMO1C_WIDGET_DIR)"])


def png_size(path: Path) -> tuple[int, int] | None:
    with path.open("rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def _lookup(i18n: dict, dotted: str):
    node = i18n
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def validate(src: Path) -> dict:
    """Every problem at once, each saying what is wrong and what would be right. Returns the manifest."""
    manifest = _read_manifest(src)
    widget = manifest["widget"]
    problems = _widget_problems(widget)
    locales = widget.get("locale")
    if not (isinstance(locales, list) and locales and all(isinstance(x, str) for x in locales)):
        problems.append('manifest.json: widget.locale must be a list such as ["ru", "en"]')
        locales = []
    locations = manifest.get("locations")
    if not (isinstance(locations, list) and locations):
        problems.append('manifest.json: "locations" must be a non-empty list such as ["lcard-1"]')
    settings = manifest.get("settings") or {}
    if not isinstance(settings, dict):
        problems.append('manifest.json: "settings" must be an object')
        settings = {}
    problems += _settings_problems(settings)
    # every text key the manifest names must be translated in every locale
    keys = [widget.get(k) for k in ("name", "description", "short_description")]
    keys += [spec.get("name") for spec in settings.values() if isinstance(spec, dict)]
    for loc in locales:
        problems += _i18n_problems(src, loc, keys)
    problems += _file_problems(src)
    if problems:
        raise WidgetError(problems)
    return manifest


def _read_manifest(src: Path) -> dict:
    """The manifest, or the one problem that stops every other check."""
    try:
        manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WidgetError([f"{src}/manifest.json: missing"]) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WidgetError([f"{src}/manifest.json: not valid UTF-8 JSON: {exc}"]) from None
    if not isinstance(manifest, dict):
        raise WidgetError(["manifest.json: must be a JSON object"])
    if not isinstance(manifest.get("widget"), dict):
        raise WidgetError(['manifest.json: missing the "widget" object'])
    return manifest


def _widget_problems(widget: dict) -> list[str]:
    problems = [f"manifest.json: widget.{key} is required" for key in REQUIRED_WIDGET_KEYS
                if key not in widget]
    version = widget.get("version")
    if version is not None and not (isinstance(version, str) and all(p.isdigit() for p in version.split("."))):
        problems.append(f'manifest.json: widget.version "{version}" must look like 1.0.0')
    if "interface_version" in widget and widget["interface_version"] != 2:
        problems.append("manifest.json: widget.interface_version must be 2")
    for key in ("init_once", "installation"):
        if key in widget and not isinstance(widget[key], bool):
            problems.append(f"manifest.json: widget.{key} must be true or false")
    support = widget.get("support")
    if "support" in widget and not (isinstance(support, dict) and (support.get("link") or support.get("email"))):
        problems.append("manifest.json: widget.support needs a link or an email")
    return problems


def _settings_problems(settings: dict) -> list[str]:
    return [f"manifest.json: settings.{key} needs a name and a type among " + ", ".join(sorted(SETTING_TYPES))
            for key, spec in settings.items()
            if not isinstance(spec, dict) or spec.get("type") not in SETTING_TYPES or not spec.get("name")]


def _i18n_problems(src: Path, loc: str, keys: list) -> list[str]:
    try:
        i18n = json.loads((src / "i18n" / f"{loc}.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"i18n/{loc}.json: missing (the manifest lists the locale {loc!r})"]
    except (ValueError, UnicodeDecodeError) as exc:
        return [f"i18n/{loc}.json: not valid UTF-8 JSON: {exc}"]
    return [f'i18n/{loc}.json: no text for "{k}"' for k in keys
            if isinstance(k, str) and not isinstance(_lookup(i18n, k), str)]


def _file_problems(src: Path) -> list[str]:
    problems = [] if (src / "script.js").is_file() else ["script.js: missing"]
    for name, (w, h) in IMAGES.items():
        path = src / "images" / name
        if not path.is_file():
            problems.append(f"images/{name}: missing (a {w}x{h} PNG)")
            continue
        size = png_size(path)
        if size != (w, h):
            problems.append(f"images/{name}: is {size or 'not a PNG'}, must be a {w}x{h} PNG")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            problems.append(f"images/{name}: {path.stat().st_size} bytes, at most {MAX_IMAGE_BYTES}")
    return problems


def _host(value: str) -> str:
    if "@" in value and "://" not in value:
        return value.rsplit("@", 1)[1]
    return urlparse(value).hostname or ""


def with_support(manifest: dict, email: str | None, url: str | None) -> dict:
    """The manifest with the support contact given to the build; WidgetError when a contact is
    malformed or only the placeholder would ship."""
    problems = []
    if email is not None and not _EMAIL.match(email):
        problems.append(f'--support-email "{email}" is not an e-mail address (e.g. it@yourclinic.ru)')
    if url is not None and not (urlparse(url).scheme in ("http", "https") and urlparse(url).hostname):
        problems.append(f'--support-url "{url}" is not an http(s) address (e.g. https://yourclinic.ru/help)')
    if problems:
        raise WidgetError(problems)
    support = dict(manifest["widget"].get("support") or {})
    if email or url:  # what the build was given replaces the shipped contact entirely
        support = {k: v for k, v in (("link", url), ("email", email)) if v}
    left = [v for v in support.values() if isinstance(v, str) and _PLACEHOLDER_HOSTS.search(_host(v))]
    if left or not support:
        raise WidgetError([f"manifest.json: widget.support is still a placeholder ({', '.join(left) or 'none'}); "
                           "amoCRM shows it to every user of the widget: pass --support-email "
                           "it@yourclinic.ru and/or --support-url https://yourclinic.ru/help"])
    return {**manifest, "widget": {**manifest["widget"], "support": support}}


def build(src: Path, out: Path, *, support_email: str | None = None, support_url: str | None = None) -> Path:
    """Validate, then write the zip with manifest.json (with the support contact) at its root."""
    manifest = with_support(validate(src), support_email, support_url)
    files = sorted(p for p in src.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(files, key=lambda p: (p.name != "manifest.json", p.relative_to(src).as_posix())):
            info = zipfile.ZipInfo(p.relative_to(src).as_posix(), date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            data = p.read_bytes()
            if p == src / "manifest.json":
                data = (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
            zf.writestr(info, data)
    tmp.replace(out)
    return out


def main(args) -> int:
    if getattr(args, "widget_command", "build") != "build":
        print(f"amo1c-sync widget {args.widget_command}: unknown action", file=sys.stderr)
        return 2
    try:
        src = find_widget_dir()
        out = build(src, Path(args.out), support_email=getattr(args, "support_email", None),
                    support_url=getattr(args, "support_url", None))
    except WidgetError as exc:
        print("widget is not valid for amoCRM:", file=sys.stderr)
        for p in exc.problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    print(f"{out}: widget {manifest['widget']['version']} from {src} "
          f"({out.stat().st_size} bytes); upload it in amoCRM: Настройки -> Интеграции -> "
          "Создать интеграцию -> Загрузить архив")
    return 0
