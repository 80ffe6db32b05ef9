"""The daemon's optional HTTP endpoint (F1 free slots, F5): what the amoCRM widget «Интеграция 1С» calls.

Routes
  GET  /slots?date=2021-12-22            -> 200 {"date", "doctors": [...]}
  GET  /slots?date=22.12.2021&doctor=…   -> 200 {"date", "doctor", "times": ["8:15", ...]}
  POST /register?lead_id=…               -> 202 {"accepted": true, "lead_id", "message"}; nudges the
                                            registration job. The flag on the lead stays the source
                                            of truth: this only makes the daemon look now.
  POST /cancel?lead_id=…                 -> 202 the same shape; after the widget set ``[fields]
                                            cancel_flag``: nudges the registration job, which cancels
                                            the lead's «Заявка» in 1C (the flag is the source of truth)
  GET  /fields                           -> 200 {"date", "doctor", "time", "flag", "number", "sum",
                                            "cancel_flag"}: the
                                            configured lead field names, for the widget
  GET  /healthz                          -> amo1c_sync.status.health(store, settings)
  GET  /metrics                          -> Prometheus text
  OPTIONS *                              -> CORS preflight

Authentication: the header ``X-Amo1c-Secret`` must equal ``[http] secret`` (constant-time compare).
The secret is never accepted in the query string: it would end up in proxy and access logs, and the
widget sends it as a header with jQuery, which amoCRM's widget sandbox allows (the browser makes a
CORS preflight for it, answered here). /fields, /healthz, /metrics and preflights need no secret; they are
only reachable where the server listens (``[http] host``, loopback by default).

CORS: ``Access-Control-Allow-Origin`` is sent only for the configured origin (``[http]
allowed_origin``, default: scheme + host of ``[amocrm] base_url``); other origins get no CORS
headers, so a browser on another site cannot read the answers.

Errors are JSON ``{"error": code, "message": text}``; never a stack trace. An unexpected exception
answers 500 with a generic message and is logged with its traceback.
"""

from __future__ import annotations

import hmac
import json
import re
from datetime import date
from typing import Any, Callable
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from amo1c_sync.domain.dates import format_time, parse_user_date
from amo1c_sync.domain.registration import no_such_doctor_text
from amo1c_sync.domain.slots import NotWorking, UnknownDoctor
from amo1c_sync.errors import ConfigError, FatalError, ItemError, RetriableError
from amo1c_sync.logs import get_logger, register_secret
from amo1c_sync.metrics import REGISTRY
from amo1c_sync.status import health

log = get_logger("amo1c_sync.web")

SECRET_HEADER = "X-Amo1c-Secret"
ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = f"{SECRET_HEADER}, Content-Type, X-Requested-With"
PREFLIGHT_MAX_AGE = "600"

class BadRequest(Exception):
    """A 4xx answer with a code and a message for a person."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def parse_date(text: str | None) -> date:
    """'2021-12-22' or '22.12.2021' (the domain's parser) -> date, or a 400 that says both forms."""
    if not text or not text.strip():
        raise BadRequest("bad_date", "Не указана дата: передайте date=ДД.ММ.ГГГГ или ГГГГ-ММ-ДД. "
                                     "Missing date: pass date=DD.MM.YYYY or YYYY-MM-DD.")
    try:
        return parse_user_date(text)
    except ValueError:
        shown = text.strip()[:40]
        raise BadRequest("bad_date", f"Неверная дата «{shown}»: укажите ДД.ММ.ГГГГ (22.12.2021) или "
                                     f"ГГГГ-ММ-ДД (2021-12-22). Invalid date {shown!r}: use DD.MM.YYYY "
                                     "or YYYY-MM-DD.") from None


def allowed_origins(settings) -> frozenset[str]:
    """``[http] allowed_origin`` (one or more, comma or space separated), else the origin of
    ``[amocrm] base_url``."""
    raw = (settings.http.allowed_origin or "").strip()
    if not raw:
        raw = settings.amocrm.base_url
    out = set()
    for item in re.split(r"[,\s]+", raw):
        if not item:
            continue
        parts = urlsplit(item)
        if parts.scheme and parts.netloc:
            out.add(f"{parts.scheme.lower()}://{parts.netloc.lower()}")
    return frozenset(out)


class SlotsApp:
    """The WSGI application. Build it with :func:`create_app`."""

    def __init__(self, settings, *, slot_finder, store=None,
                 nudge: Callable[[str], Any] | None = None):
        secret = settings.http.secret
        if not secret:
            raise ConfigError("[http] secret: required to serve the HTTP endpoint (or set "
                              "AMO1C_HTTP_SECRET / the http_secret credential)")
        if not all(33 <= ord(c) < 127 for c in secret):
            raise ConfigError("[http] secret: use ASCII letters, digits and punctuation only, no spaces "
                              "(a browser cannot send other characters in the X-Amo1c-Secret header)")
        register_secret(secret)
        self.settings = settings
        self.slot_finder = slot_finder
        self.store = store
        self.nudge = nudge
        self._secret = secret.encode("utf-8")
        self.origins = allowed_origins(settings)
        self.url_map = Map([
            Rule("/slots", endpoint="slots", methods=["GET"]),
            Rule("/register", endpoint="register", methods=["POST"]),
            Rule("/cancel", endpoint="cancel", methods=["POST"]),
            Rule("/fields", endpoint="fields", methods=["GET"]),
            Rule("/healthz", endpoint="healthz", methods=["GET"]),
            Rule("/metrics", endpoint="metrics", methods=["GET"]),
        ])
        self._public = {"fields", "healthz", "metrics"}

    # ------------------------------------------------------------------ WSGI
    def __call__(self, environ, start_response):
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except Exception:  # noqa: BLE001 - never a stack trace to the client
            try:
                log.exception("http.internal_error", method=request.method, path=request.path)
            except Exception:  # noqa: BLE001 - a broken log stream must not break the answer
                pass
            response = _error(500, "internal", "Внутренняя ошибка сервиса интеграции; подробности в "
                                               "журнале. Internal error; see the service log.")
        self._cors(request, response)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return self._preflight(request)
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, values = adapter.match()
        except NotFound:
            return _error(404, "not_found", f"Нет такого адреса: {request.path}. Not found.")
        except MethodNotAllowed as exc:
            resp = _error(405, "method_not_allowed", f"Метод {request.method} не поддерживается. "
                                                     "Method not allowed.")
            resp.headers["Allow"] = ", ".join(exc.valid_methods or [])
            return resp
        except HTTPException as exc:  # pragma: no cover - other routing errors
            return _error(exc.code or 400, "bad_request", exc.description or "Bad request")
        if endpoint not in self._public and not self._authenticated(request):
            return _error(401, "unauthorized", f"Нужен секрет интеграции в заголовке {SECRET_HEADER} "
                                               "(настройки виджета). Missing or wrong secret.")
        try:
            return getattr(self, f"on_{endpoint}")(request, **values)
        except BadRequest as exc:
            return _error(exc.status, exc.code, exc.message)
        except ItemError as exc:
            return _error(400, exc.code or "bad_request", str(exc))
        except (RetriableError, FatalError) as exc:
            log.warning("http.upstream_unavailable", path=request.path, error=str(exc))
            resp = _error(503, "unavailable", "1С сейчас недоступна, попробуйте через минуту. "
                                              f"1C is unavailable, try again shortly. ({exc})")
            resp.headers["Retry-After"] = "30"
            return resp

    # ------------------------------------------------------------------ auth and CORS
    def _authenticated(self, request: Request) -> bool:
        given = request.headers.get(SECRET_HEADER)
        if not given:
            return False
        try:  # WSGI hands header values over as latin-1 text: back to the bytes that were sent
            sent = given.encode("latin-1")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(sent, self._secret)

    def _origin_allowed(self, request: Request) -> str | None:
        origin = request.headers.get("Origin")
        if origin and origin.lower().rstrip("/") in self.origins:
            return origin
        return None

    def _cors(self, request: Request, response: Response) -> None:
        response.vary.add("Origin")
        origin = self._origin_allowed(request)
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin

    def _preflight(self, request: Request) -> Response:
        response = Response(status=204)
        if self._origin_allowed(request):
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
            # Chrome's Private Network Access: a page on the public amoCRM site calling a daemon on
            # the clinic's network asks for this first.
            if request.headers.get("Access-Control-Request-Private-Network") == "true":
                response.headers["Access-Control-Allow-Private-Network"] = "true"
        return response

    # ------------------------------------------------------------------ endpoints
    def on_slots(self, request: Request) -> Response:
        day = parse_date(request.args.get("date"))
        doctor = (request.args.get("doctor") or "").strip()
        if not doctor:
            doctors = list(self.slot_finder.doctors(day))
            return _json({"date": day.isoformat(), "doctors": doctors})
        times = self.slot_finder.free_times(day, doctor)
        if isinstance(times, (UnknownDoctor, NotWorking)):
            return _error(400, times.code, no_such_doctor_text(times))
        return _json({"date": day.isoformat(), "doctor": doctor, "times": [format_time(t) for t in times]})

    def on_register(self, request: Request) -> Response:
        lead_id = self._lead_id(request)
        nudged = False
        if self.nudge is not None:
            # Daemon.nudge answers False when this instance is not the leader: the leader still
            # finds the flagged lead on its next poll
            nudged = self.nudge("registration") is not False
        log.info("http.register_nudged", lead_id=lead_id, nudged=nudged)
        # this endpoint does not read the lead: what it says must hold whether the flag is set or not
        flag = self.settings.fields.flag
        if nudged:
            when_ru, when_en = "сейчас", "now"
        else:
            minutes = max(1, round(self.settings.sync.registration_interval / 60))
            when_ru, when_en = f"при следующей проверке (до {minutes} мин)", f"on the next poll (within {minutes} min)"
        message = (f"Сделка будет проверена {when_ru}: если на ней отмечено «{flag}», запись будет "
                   f"зарегистрирована в 1С, и результат появится в заметке. The lead will be checked "
                   f"{when_en}: if «{flag}» is set on it, it is registered in 1C and a note tells the result.")
        return _json({"accepted": True, "lead_id": lead_id, "nudged": nudged, "message": message},
                     status=202)

    def on_cancel(self, request: Request) -> Response:
        """The cancel button: like /register, the checkbox on the lead is what the job acts on."""
        lead_id = self._lead_id(request)
        if not self.settings.fields.cancel_flag:
            raise BadRequest("cancel_off", "Отмена из карточки выключена: в sync.ini не задано [fields] "
                                           "cancel_flag. Cancel from the card is off ([fields] cancel_flag).")
        nudged = self.nudge is not None and self.nudge("registration") is not False
        log.info("http.cancel_nudged", lead_id=lead_id, nudged=nudged)
        message = ("Отмена записи поставлена в очередь. Queued for cancelling in 1C." if nudged else
                   "Запись будет отменена в 1С при следующей проверке. Will be cancelled on the next poll.")
        return _json({"accepted": True, "lead_id": lead_id, "nudged": nudged, "message": message},
                     status=202)

    @staticmethod
    def _lead_id(request: Request) -> int:
        raw = request.args.get("lead_id")
        if raw is None:
            body = request.get_json(silent=True) if request.is_json else None
            if isinstance(body, dict):
                raw = body.get("lead_id")
            else:
                raw = request.form.get("lead_id")
        try:
            lead_id = int(str(raw).strip())
            if lead_id <= 0:
                raise ValueError
        except (TypeError, ValueError):
            raise BadRequest("bad_lead_id", "Не указан номер сделки: передайте lead_id=<id сделки>. "
                                            "Missing or invalid lead_id.") from None
        return lead_id

    def on_fields(self, request: Request) -> Response:
        """The configured lead field names, for the widget (they are what the card shows anyway)."""
        f = self.settings.fields
        return _json({"date": f.date, "doctor": f.doctor, "time": f.time, "flag": f.flag,
                      "number": f.zayavka_number or None, "sum": f.sum or None,
                      "cancel_flag": f.cancel_flag or None})

    def on_healthz(self, request: Request) -> Response:
        if self.store is None:  # nothing to judge the jobs by: the process answers, that is all
            return _json({"ok": True})
        try:
            status, body = health(self.store, self.settings)
        except Exception:
            log.exception("http.health_failed")
            return _json({"ok": False, "error": "health check failed"}, status=503)
        return _json(body, status=status)

    def on_metrics(self, request: Request) -> Response:
        return Response(generate_latest(REGISTRY), status=200, content_type=CONTENT_TYPE_LATEST)


def _json(body: Any, status: int = 200) -> Response:
    resp = Response(json.dumps(body, ensure_ascii=False), status=status,
                    content_type="application/json; charset=utf-8")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _error(status: int, code: str, message: str) -> Response:
    return _json({"error": code, "message": message}, status=status)


def create_app(settings, *, slot_finder, store=None, nudge: Callable[[str], Any] | None = None
               ) -> SlotsApp:
    """The endpoint as a WSGI application. ``slot_finder`` has ``doctors(day)`` and
    ``free_times(day, doctor)`` (amo1c_sync.services.slots.SlotFinder); ``nudge(job_name)`` asks the
    daemon to run a job now (Daemon.nudge)."""
    return SlotsApp(settings, slot_finder=slot_finder, store=store, nudge=nudge)
