"""sync.ini -> typed, validated settings. Every error names the file, section and key and says
what would be valid; nothing starts until the file is right."""

from __future__ import annotations

import configparser
import os
import re
import stat
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from amo1c_sync.domain.lifecycle import STAGE_KEYS, StageName, StateValues, parse_stage_name
from amo1c_sync.domain.patients import is_phone_region
from amo1c_sync.domain.retry import ItemRetry, RequestRetry, RetryPolicy
from amo1c_sync.errors import ConfigError

DEFAULT_PATHS = (Path("sync.ini"), Path("/etc/amo1c-sync/sync.ini"))
# where the systemd unit keeps its config and its state (StateDirectory=amo1c-sync): a shell that
# reads the service's config finds the service's SQLite store, not one in its own directory
SERVICE_CONFIG_DIR = Path("/etc/amo1c-sync")
SERVICE_STATE_DIR = Path("/var/lib/amo1c-sync")
STORE_FILE = "amo1c-sync.db"

# secret key -> (section, key, environment variable, systemd credential name)
SECRETS = {
    "amocrm.client_secret": ("amocrm", "client_secret", "AMO1C_AMOCRM_CLIENT_SECRET", "amocrm_client_secret"),
    "amocrm.long_lived_token": ("amocrm", "long_lived_token", "AMO1C_AMOCRM_LONG_LIVED_TOKEN",
                                "amocrm_long_lived_token"),
    "onec.password": ("onec", "password", "AMO1C_ONEC_PASSWORD", "onec_password"),
    "http.secret": ("http", "secret", "AMO1C_HTTP_SECRET", "http_secret"),
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """'30s', '5m', '1h', '2d', '250ms' or plain seconds -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class AmoCRMSettings:
    """``[amocrm]``: the account, the OAuth integration and the request budget."""

    base_url: str = "https://example.amocrm.ru"
    client_id: str = ""
    client_secret: str | None = field(default=None, repr=False)
    redirect_uri: str = ""
    long_lived_token: str | None = field(default=None, repr=False)
    rate_limit: float = 7.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    token_timeout: float = 60.0


@dataclass(frozen=True)
class OneCSettings:
    """``[onec]``: the OData publication, its user and timeouts."""

    base_url: str = "http://localhost/clinic/odata/standard.odata"
    username: str = ""
    password: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 60.0


@dataclass(frozen=True)
class FieldNames:
    """amoCRM lead custom fields, by the names the clinic sees in the lead card."""

    date: str = "Дата записи к врачу"
    doctor: str = "Врач"
    time: str = "Время записи"
    client_name: str = "ФИО клиента"
    sum: str = "Сумма1С"
    flag: str = "Зарегистрировать в 1С"
    zayavka_number: str = "Заявка 1С"
    cancel_flag: str = ""  # the checkbox the widget's «Отменить запись в 1С» sets; "" = off


@dataclass(frozen=True)
class SyncSettings:
    """``[sync]``: time zone, job intervals, windows and the appointment grid."""

    timezone: str = "Europe/Moscow"
    registration_interval: float = 15.0
    payments_interval: float = 60.0
    lifecycle_interval: float = 60.0
    lifecycle_ahead: float = 92 * 86400.0  # the lifecycle follows appointments this far ahead
    directory_interval: float = 3600.0
    hot_window: float = 3 * 86400.0
    lookback: float = 62 * 86400.0
    full_scan_interval: float = 3600.0
    lead_cursor_overlap: float = 60.0
    lead_reconcile_interval: float = 3600.0
    slot_step_minutes: int = 5
    appointment_minutes: int = 15
    schedule_cache_ttl: float = 60.0
    # after a «Заявка» create whose answer was lost, how long 1C may still carry it out: until
    # then each cycle looks it up and the lead waits; after it, it is created again (longer than
    # 1C's worst case)
    create_settle_seconds: float = 30.0
    # the old names of [retry] item_backoff_base, item_backoff_max, item_max_attempts: still read
    # from [sync], and always equal to the [retry] values in force
    retry_backoff_base: float = field(default=60.0, metadata={"moved_to": "item_backoff_base"})
    retry_backoff_max: float = field(default=3600.0, metadata={"moved_to": "item_backoff_max"})
    max_attempts: int = field(default=0, metadata={"moved_to": "item_max_attempts"})
    client_name_max_length: int = 150  # 1C clients catalog's Description length; 0 = no check
    # lifecycle: how a cancel from the card reaches 1C, and the «Заявка» status values it follows
    cancel_mode: str = "delete_mark"
    cancelled_states: str = ""
    no_show_states: str = ""
    phone_region: str = "RU"  # the country of a phone number typed without its code
    # the amoCRM contact field that keeps the patient's 1C client key; "" = not read nor written
    contact_client_field: str = "Клиент 1С"

    @property
    def state_values(self) -> StateValues:
        return StateValues(cancelled=split_list(self.cancelled_states),
                           no_show=split_list(self.no_show_states))

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class RetrySettings:
    """``[retry]``: the numbers of ``domain.retry.RetryPolicy``."""

    request_retries: int = 5
    request_backoff_base: float = 0.5
    request_backoff_max: float = 30.0
    request_jitter: bool = True
    item_backoff_base: float = 60.0
    item_backoff_max: float = 3600.0
    item_max_attempts: int = 0

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            request=RequestRetry(retries=self.request_retries, backoff_base=self.request_backoff_base,
                                 backoff_max=self.request_backoff_max, jitter=self.request_jitter),
            item=ItemRetry(backoff_base=self.item_backoff_base, backoff_max=self.item_backoff_max,
                           max_attempts=self.item_max_attempts))


MAX_REQUEST_RETRIES = 20  # beyond it one request holds its job for many minutes of backoff
# [sync] keys that moved to [retry] (old name -> new name); the old names are still read
MOVED_TO_RETRY = {f.name: f.metadata["moved_to"] for f in fields(SyncSettings) if "moved_to" in f.metadata}


def split_list(text: str) -> tuple[str, ...]:
    """«Отменена, Отказ» -> ("Отменена", "Отказ")."""
    return tuple(v.strip() for v in (text or "").split(",") if v.strip())


@dataclass(frozen=True)
class StageSettings:
    """``[stages]``: where an event moves the lead, as «Pipeline name / Stage name»; empty = no move.
    Resolved against amoCRM's pipelines at start-up (``domain.lifecycle.resolve_stages``)."""

    registered: str = ""
    cancelled: str = ""
    no_show: str = ""
    paid: str = ""
    move_closed: bool = False

    def names(self) -> dict[str, StageName | None]:
        """Each ``[stages]`` key parsed; the values were checked when the file was loaded."""
        return {key: parse_stage_name(getattr(self, key)) for key in STAGE_KEYS}


@dataclass(frozen=True)
class StoreSettings:
    """``[store]``: the state database and the leader lock lease."""

    url: str = ""
    # the folder an empty url means when there is no $STATE_DIRECTORY (set by load_settings)
    default_dir: str = field(default="", repr=False, metadata={"internal": True})
    timeout: float = 10.0
    lock_lease: float = 15.0

    def resolved_url(self) -> str:
        """Empty -> a SQLite file in systemd's StateDirectory; outside the unit, the same file when
        the config is the service's (/etc/amo1c-sync), else one in the working directory."""
        if self.url:
            return self.url
        state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        base = Path(state_dir or self.default_dir or Path.cwd())
        return f"sqlite:///{(base / STORE_FILE).resolve()}"


@dataclass(frozen=True)
class HttpSettings:
    """``[http]``: the optional endpoint the widget calls."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8765
    secret: str | None = field(default=None, repr=False)
    allowed_origin: str = ""
    stale_after: float = 900.0


@dataclass(frozen=True)
class LoggingSettings:
    """``[logging]``: level and format (``auto``: JSON off a TTY)."""

    level: str = "INFO"
    format: str = "auto"


@dataclass(frozen=True)
class Settings:
    """The whole of sync.ini, validated; gateways never read it, jobs build them from it."""

    amocrm: AmoCRMSettings = field(default_factory=AmoCRMSettings)
    onec: OneCSettings = field(default_factory=OneCSettings)
    fields: FieldNames = field(default_factory=FieldNames)
    onec_names: Any = None  # amo1c_sync.onec.names.OneCNames
    sync: SyncSettings = field(default_factory=SyncSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    stages: StageSettings = field(default_factory=StageSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    source: str = "<defaults>"

    def secrets(self) -> list[str]:
        """Every secret value in force, for the log masker."""
        values = [self.amocrm.client_secret, self.amocrm.long_lived_token, self.onec.password,
                  self.http.secret]
        return [v for v in values if v]


def _onec_names_cls():
    from amo1c_sync.onec.names import OneCNames

    return OneCNames


# section -> dataclass; onec_names is resolved lazily to keep config free of the gateway at import
_SECTIONS: dict[str, Callable[[], type]] = {
    "amocrm": lambda: AmoCRMSettings,
    "onec": lambda: OneCSettings,
    "fields": lambda: FieldNames,
    "onec_names": _onec_names_cls,
    "sync": lambda: SyncSettings,
    "retry": lambda: RetrySettings,
    "stages": lambda: StageSettings,
    "store": lambda: StoreSettings,
    "http": lambda: HttpSettings,
    "logging": lambda: LoggingSettings,
}

_DURATION_KEYS = {
    "connect_timeout", "read_timeout", "registration_interval", "payments_interval",
    "directory_interval", "hot_window", "lookback", "full_scan_interval", "lead_cursor_overlap",
    "lead_reconcile_interval", "create_settle_seconds",
    "schedule_cache_ttl", "retry_backoff_base", "retry_backoff_max", "stale_after",
    "request_backoff_base", "request_backoff_max", "item_backoff_base", "item_backoff_max",
    "timeout", "lock_lease", "token_timeout", "lifecycle_interval", "lifecycle_ahead",
}
_MAY_BE_ZERO = {"lead_cursor_overlap"}
_REQUIRED_NAMES = ("date", "doctor", "time", "flag")  # [fields] registration cannot do without
TOKEN_TIMEOUT_MAX = 70.0  # a stop waits this long for a refresh in flight; TimeoutStopSec=90s
AMOCRM_MAX_RATE = 7.0  # requests per second per integration; above it: 429s, then a 403 block
_CHOICES = {
    ("logging", "level"): ("DEBUG", "INFO", "WARNING", "ERROR"),
    ("logging", "format"): ("auto", "json", "console"),
    ("onec_names", "base_ref_mode"): ("composite", "single"),
    ("sync", "cancel_mode"): ("delete_mark", "unpost"),
}


def _convert(where: str, section: str, key: str, raw: str, default: Any, annotation: str) -> Any:
    value = raw.strip()
    choices = _CHOICES.get((section, key))
    if choices:
        normal = value.upper() if section == "logging" and key == "level" else value
        if normal not in choices:
            raise ConfigError(f'{where} [{section}] {key}: "{value}" is not valid; use one of '
                              + ", ".join(choices))
        return normal
    if key in _DURATION_KEYS:
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise ConfigError(f'{where} [{section}] {key}: "{value}" is not a duration; '
                              "use 30s, 5m or 1h") from None
        if seconds <= 0 and key not in _MAY_BE_ZERO:
            raise ConfigError(f'{where} [{section}] {key}: "{value}" must be greater than 0')
        return seconds
    if isinstance(default, bool) or annotation == "bool":
        low = value.lower()
        if low in ("1", "yes", "true", "on"):
            return True
        if low in ("0", "no", "false", "off"):
            return False
        raise ConfigError(f'{where} [{section}] {key}: "{value}" is not a yes/no value; '
                          "use yes or no")
    if isinstance(default, int) and not isinstance(default, bool) or annotation == "int":
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f'{where} [{section}] {key}: "{value}" is not a whole number') from None
        if number < 0:
            raise ConfigError(f"{where} [{section}] {key}: {number} must not be negative")
        return number
    if isinstance(default, float) or annotation == "float":
        try:
            real = float(value)
        except ValueError:
            raise ConfigError(f'{where} [{section}] {key}: "{value}" is not a number') from None
        if real <= 0:
            raise ConfigError(f"{where} [{section}] {key}: {value} must be greater than 0")
        return real
    return value or (None if default is None else value)


def _read_secret_sources(values: dict[str, dict[str, str]]) -> None:
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    for section, key, env, cred in SECRETS.values():
        # an empty credential file is "not set": the unit loads all four, used or not
        cred_value = ((Path(cred_dir) / cred).read_text().strip()
                      if cred_dir and (Path(cred_dir) / cred).is_file() else "")
        if cred_value:
            values.setdefault(section, {})[key] = cred_value
        if os.environ.get(env):
            values.setdefault(section, {})[key] = os.environ[env]


def _warn_if_exposed(path: Path, parser: configparser.ConfigParser) -> None:
    holds_secret = any(parser.has_option(s, k) and parser.get(s, k).strip()
                       for s, k, _, _ in SECRETS.values())
    if not holds_secret:
        return
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.warn(f"{path} holds a secret and is readable by group or others; "
                      f"run: chmod 600 {path}", stacklevel=3)


class _CaseKeepingParser(configparser.ConfigParser):
    """Keys as written: «[fields] doctor» and «Doctor» are what the administrator typed."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def find_config(explicit: str | None) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        return path
    for candidate in DEFAULT_PATHS:
        if candidate.is_file():
            return candidate
    return None


def load_settings(path: str | Path | None = None, *, overrides: dict[str, dict[str, str]] | None = None
                  ) -> Settings:
    """Read sync.ini (or only defaults when ``path`` is None), then secrets from the environment and
    systemd credentials, then ``overrides`` (used by the sandbox)."""
    where = str(path) if path else "<defaults>"
    values: dict[str, dict[str, str]] = {}
    if path is not None:
        p = Path(path)
        parser = _CaseKeepingParser(interpolation=None, inline_comment_prefixes=None)
        try:
            with p.open(encoding="utf-8-sig") as fh:  # Notepad saves UTF-8 with a BOM
                parser.read_file(fh)
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such file") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        except configparser.Error as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"{p}: cannot parse: {first}") from None
        for section in parser.sections():
            if section not in _SECTIONS:
                raise ConfigError(f"{where} [{section}]: unknown section; valid sections are "
                                  + ", ".join(f"[{s}]" for s in _SECTIONS))
            values[section] = dict(parser.items(section))
        _warn_if_exposed(p, parser)
    _read_secret_sources(values)
    for section, items in (overrides or {}).items():
        values.setdefault(section, {}).update(items)

    built: dict[str, Any] = {}
    for section, cls_factory in _SECTIONS.items():
        cls = cls_factory()
        defaults = cls()
        known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
        kwargs: dict[str, Any] = {}
        for key, raw in values.get(section, {}).items():
            if key not in known:
                raise ConfigError(f"{where} [{section}] {key}: unknown key; valid keys are "
                                  + ", ".join(known))
            kwargs[key] = _convert(where, section, key, raw, getattr(defaults, key),
                                   str(known[key].type))
        try:
            built[section] = replace(defaults, **kwargs) if kwargs else defaults
        except ValueError as exc:  # the dataclass's own validation (e.g. OneCNames)
            raise ConfigError(f"{where} [{section}]: {exc}") from None
    built["sync"], built["retry"] = _moved_to_retry(built["sync"], built["retry"], values, where)
    if path is not None and Path(path).resolve().parent == SERVICE_CONFIG_DIR.resolve():
        built["store"] = replace(built["store"], default_dir=str(SERVICE_STATE_DIR))
    settings = Settings(**built, source=where)
    _validate(settings, where)
    return settings


def _moved_to_retry(sync: SyncSettings, retry: RetrySettings, values: dict[str, dict[str, str]],
                    where: str) -> tuple[SyncSettings, RetrySettings]:
    """An old [sync] name sets its [retry] key (setting both is an error); afterwards the [sync]
    fields mirror the [retry] values, so a reader of either sees the numbers in force."""
    in_sync, in_retry = values.get("sync", {}), values.get("retry", {})
    moved: dict[str, Any] = {}
    for old, new in MOVED_TO_RETRY.items():
        if old in in_sync and new in in_retry:
            raise ConfigError(f"{where} [sync] {old}: this is the old name of [retry] {new}, which is "
                              f"also set; keep only [retry] {new}")
        if old in in_sync:
            moved[new] = getattr(sync, old)
    retry = replace(retry, **moved) if moved else retry
    mirror = {old: getattr(retry, new) for old, new in MOVED_TO_RETRY.items()}
    return replace(sync, **mirror), retry


def _validate(s: Settings, where: str) -> None:
    if s.amocrm.rate_limit > AMOCRM_MAX_RATE:
        # a warning, not an error: a test server (the sandbox) may allow more
        warnings.warn(f"{where} [amocrm] rate_limit: {s.amocrm.rate_limit:g} is above amoCRM's limit "
                      f"of {AMOCRM_MAX_RATE:g} requests per second per integration; amoCRM answers "
                      "429 and then blocks the integration (403); use 7 or less", stacklevel=3)
    for key in _REQUIRED_NAMES:
        if not (getattr(s.fields, key) or "").strip():
            raise ConfigError(f"{where} [fields] {key}: required (the name of the lead field as the "
                              f"clinic sees it, e.g. «{getattr(FieldNames(), key)}»)")
    try:
        _ = s.sync.tz  # loading the zone is the check
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f'{where} [sync] timezone: "{s.sync.timezone}" is not an IANA time zone; '
                          "use e.g. Europe/Moscow") from None
    if not is_phone_region(s.sync.phone_region):
        raise ConfigError(f'{where} [sync] phone_region: "{s.sync.phone_region}" is not a region code; '
                          "use two capital letters, e.g. RU, KZ or BY")
    if s.sync.slot_step_minutes == 0 or 60 % s.sync.slot_step_minutes:
        raise ConfigError(f"{where} [sync] slot_step_minutes: {s.sync.slot_step_minutes} must divide "
                          "60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60)")
    _validate_retry(s.retry, where)
    _validate_lifecycle(s, where)
    if s.sync.appointment_minutes == 0:
        raise ConfigError(f"{where} [sync] appointment_minutes: must be at least 1")
    for section, obj in (("amocrm", s.amocrm), ("onec", s.onec)):
        if not re.match(r"^https?://[^/\s]+", obj.base_url):
            raise ConfigError(f'{where} [{section}] base_url: "{obj.base_url}" is not an http(s) URL')
    if s.store.lock_lease < s.store.timeout + 5:
        raise ConfigError(f"{where} [store] lock_lease: {s.store.lock_lease:g}s must be at least "
                          f"[store] timeout + 5s ({s.store.timeout + 5:g}s): a leader held up by one "
                          "slow store operation would lose its lock")
    if s.amocrm.token_timeout > TOKEN_TIMEOUT_MAX:
        raise ConfigError(f"{where} [amocrm] token_timeout: {s.amocrm.token_timeout:g}s is too long; "
                          f"at most {TOKEN_TIMEOUT_MAX:g}s, so that a stop (systemd allows 90 s) "
                          "can wait for a token refresh in flight")
    if not 0 < s.http.port < 65536:
        raise ConfigError(f"{where} [http] port: {s.http.port} is not a TCP port (1-65535)")


def _validate_lifecycle(s: Settings, where: str) -> None:
    for key in STAGE_KEYS:
        try:
            parse_stage_name(getattr(s.stages, key))
        except ValueError as exc:
            raise ConfigError(f"{where} [stages] {key}: {exc}") from None
    state_attribute = getattr(s.onec_names, "zayavka_state", "")
    for key in ("cancelled_states", "no_show_states"):
        if split_list(getattr(s.sync, key)) and not state_attribute:
            raise ConfigError(f"{where} [sync] {key}: needs the «Заявка» attribute that holds the "
                              "state; set [onec_names] zayavka_state (e.g. Состояние) or leave "
                              f"{key} empty")
    both = set(map(str.casefold, s.sync.state_values.cancelled)) & set(
        map(str.casefold, s.sync.state_values.no_show))
    if both:
        raise ConfigError(f"{where} [sync] no_show_states: «{sorted(both)[0]}» is also in "
                          "cancelled_states; a state means one or the other")


def _validate_retry(r: RetrySettings, where: str) -> None:
    if r.request_retries > MAX_REQUEST_RETRIES:
        raise ConfigError(f"{where} [retry] request_retries: {r.request_retries} is too many; use 0 to "
                          f"{MAX_REQUEST_RETRIES} (a failed item is tried again later anyway)")
    for level in ("request", "item"):
        base, cap = getattr(r, f"{level}_backoff_base"), getattr(r, f"{level}_backoff_max")
        if cap < base:
            raise ConfigError(f"{where} [retry] {level}_backoff_max: {cap:g} s is less than "
                              f"{level}_backoff_base ({base:g} s); use at least {base:g}s")


def require_http_secret(s: Settings) -> None:
    """Only what serves HTTP needs the widget's secret: `check` or `status` run from a shell, where
    the service's http_secret credential is not visible, must not fail for want of it."""
    if s.http.enabled and not s.http.secret:
        raise ConfigError(f"{s.source} [http] secret: required when [http] enabled = yes (or set "
                          "AMO1C_HTTP_SECRET / the http_secret credential)")


EXAMPLE_AMOCRM_URL = AmoCRMSettings().base_url
EXAMPLE_ONEC_URL = OneCSettings().base_url


def missing_required(s: Settings) -> list[str]:
    """Each value the example leaves empty (or as the example) that the integration cannot run
    without, with what to put there; empty when nothing is missing."""
    a, o = s.amocrm, s.onec
    out = []
    if a.base_url.rstrip("/") == EXAMPLE_AMOCRM_URL:
        out.append(f"[amocrm] base_url: still the example {EXAMPLE_AMOCRM_URL}; put your account's "
                   "address, e.g. https://yourclinic.amocrm.ru")
    if not a.long_lived_token:
        for key, what in (("client_id", "the integration's «ID интеграции» (amoCRM: Настройки -> "
                                        "Интеграции -> your integration -> Ключи и доступы)"),
                          ("client_secret", "the integration's «Секретный ключ» from the same tab "
                                            "(or AMO1C_AMOCRM_CLIENT_SECRET / the amocrm_client_secret "
                                            "credential)"),
                          ("redirect_uri", "the redirect URI you entered when creating the "
                                           "integration, exactly as entered")):
            if not (getattr(a, key) or "").strip():
                out.append(f"[amocrm] {key}: empty; put {what}")
    if o.base_url.rstrip("/") == EXAMPLE_ONEC_URL:
        out.append(f"[onec] base_url: still the example {EXAMPLE_ONEC_URL}; put the address of your "
                   "1C publication's standard OData interface, e.g. "
                   "http://1c-server/clinic/odata/standard.odata")
    if not o.username.strip():
        out.append("[onec] username: empty; put the 1C user the integration works as (a user with "
                   "the rights listed in docs/setup-1c.md)")
    return out


def load(explicit: str | None = None) -> Settings:
    """The CLI's entry: --config PATH, else ./sync.ini, else /etc/amo1c-sync/sync.ini, else defaults."""
    return load_settings(find_config(explicit))
