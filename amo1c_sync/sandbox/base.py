"""What both emulators share: a WSGI app served on loopback in a thread, the traffic record
behind ``/_sandbox/requests``, and fault injection before or after a request is carried out.

A request outside ``/_sandbox/`` goes: recorded (arrival time, target) -> a ``before`` fault may
strike (the request is then NOT carried out) -> the emulator carries it out -> an ``after`` fault
may strike (the write is done; the answer is lost, replaced or held back).
"""

from __future__ import annotations

import collections
import json
import socket
import threading
import time
from typing import Any, Callable

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

DROPPED = object()  # what strike() returns when it cut the connection: send nothing
PHASES = ("before", "after")
LOG_SIZE = 20_000   # requests kept for /_sandbox/requests (a drill sends a few thousand)


class QuietHandler(WSGIRequestHandler):
    """No access log line per request (tests make thousands); errors are still logged."""

    def log_request(self, *args, **kwargs) -> None:
        pass


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status, content_type="application/json")


class Traffic:
    """Every request the emulated system saw: counts per ``METHOD path``, per status, and a log
    of the last LOG_SIZE with arrival time (unix seconds), raw target, size and status.
    ``max_per_second``: the most requests under ``window_prefix`` that arrived in any 1 s."""

    def __init__(self, window_prefix: str):
        self.window_prefix = window_prefix
        self._lock = threading.Lock()
        self._seq = 0
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counts: collections.Counter = collections.Counter()
            self._by_status: collections.Counter = collections.Counter()
            self._log: collections.deque = collections.deque(maxlen=LOG_SIZE)
            self._window: collections.deque = collections.deque()
            self.max_per_second = 0

    def arrive(self, request: Request, environ) -> dict:
        target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path
        now, mono = time.time(), time.monotonic()
        with self._lock:
            self._seq += 1
            entry = {"seq": self._seq, "at": now, "method": request.method, "path": request.path,
                     "target": target, "bytes": len(target.encode("utf-8", "replace")),
                     "status": None, "fault": None}
            self._counts[f"{request.method} {request.path}"] += 1
            self._log.append(entry)
            if request.path.startswith(self.window_prefix):
                self._window.append(mono)
                while self._window and self._window[0] <= mono - 1.0:
                    self._window.popleft()
                self.max_per_second = max(self.max_per_second, len(self._window))
        return entry

    def answered(self, entry: dict, status: int | None, fault: str | None) -> None:
        with self._lock:
            entry["status"], entry["fault"] = status, fault
            self._by_status["dropped" if status is None else str(status)] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"counts": dict(self._counts), "total": sum(self._counts.values()),
                    "by_status": dict(self._by_status), "max_per_second": self.max_per_second,
                    "log": [dict(e) for e in self._log]}


class Faults:
    """Armed faults, each for the next ``count`` requests under ``path_prefix`` (and ``method``)
    in its ``phase``: wait ``delay_ms``, then lose the connection (``drop``) or answer
    ``status``; a fault with neither a delay nor a drop answers 500 unless it names a status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[dict] = []

    def add(self, count: int = 1, status: int | None = 500, delay_ms: int = 0, drop: bool = False,
            path_prefix: str = "/", method: str | None = None, phase: str = "before",
            path: str | None = None) -> None:
        """``path``: only requests at exactly that path (a create, not the actions under it)."""
        if phase not in PHASES:
            raise ValueError(f"fault phase {phase!r}: use one of {', '.join(PHASES)}")
        with self._lock:
            self._armed.append({"count": int(count), "status": status, "delay_ms": int(delay_ms),
                                "drop": bool(drop), "path_prefix": path_prefix or "/",
                                "method": method.upper() if method else None, "phase": phase,
                                "path": path or None})

    def add_from_json(self, body: dict) -> None:
        default_status = 500 if not body.get("drop") and not body.get("delay_ms") else None
        self.add(count=body.get("count", 1), status=body.get("status", default_status),
                 delay_ms=body.get("delay_ms", 0), drop=body.get("drop", False),
                 path_prefix=body.get("path_prefix") or "/", method=body.get("method"),
                 phase=body.get("phase") or "before", path=body.get("path"))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def pending(self) -> list[dict]:
        with self._lock:
            return [dict(f) for f in self._armed if f["count"] > 0]

    def take(self, request: Request, phase: str) -> dict | None:
        with self._lock:
            for fault in self._armed:
                if fault["phase"] != phase or fault["count"] <= 0:
                    continue
                if not request.path.startswith(fault["path_prefix"]):
                    continue
                if fault["path"] and request.path != fault["path"]:
                    continue
                if fault["method"] and fault["method"] != request.method:
                    continue
                fault["count"] -= 1
                taken = dict(fault)
                self._armed = [f for f in self._armed if f["count"] > 0]
                return taken
        return None


class LoopbackEmulator:
    """``with Emulator() as emu: emu.url`` or ``start()`` / ``stop()``. Subclasses provide
    ``handle(request, environ)`` (the emulated system's API), ``control_rules()`` and
    ``fault_response(status)`` (a failure as that system's server sends it)."""

    thread_name = "emulator"
    window_prefix = "/"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self._port = host, port
        self._lock = threading.RLock()
        self.faults = Faults()
        self.traffic = Traffic(self.window_prefix)
        self._stopping = threading.Event()
        self._server = None
        self._thread: threading.Thread | None = None
        self._control_map: Map | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = make_server(self.host, self._port, self.wsgi_app, threaded=True,
                                   request_handler=QuietHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases answers held by a delay fault
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return self._server.server_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ per system
    def handle(self, request: Request, environ) -> Response:  # pragma: no cover - per emulator
        raise NotImplementedError

    def control_rules(self) -> list[tuple[Rule, Callable[..., Response]]]:  # pragma: no cover
        raise NotImplementedError

    def fault_response(self, status: int) -> Response:  # pragma: no cover - per emulator
        """An injected failure as this system's server would send it."""
        raise NotImplementedError

    # ------------------------------------------------------------------ WSGI
    def wsgi_app(self, environ, start_response):
        request = Request(environ)
        if request.path.startswith("/_sandbox/"):
            return self._control(request)(environ, start_response)
        entry = self.traffic.arrive(request, environ)
        fault = self.faults.take(request, "before")
        response = self._strike(fault, environ, None) if fault else None
        if response is None:
            response = self.handle(request, environ)
            after = self.faults.take(request, "after")
            if after:
                fault = after
                response = self._strike(after, environ, response)
        dropped = response is DROPPED
        self.traffic.answered(entry, None if dropped else response.status_code,
                              fault and fault["phase"])
        if dropped:  # the connection is gone: the write below fails quietly
            response = Response(b"", status=500)
        return response(environ, start_response)

    def _strike(self, fault: dict, environ, carried_out: Response | None):
        """Wait the fault's delay (released early by stop()), then return DROPPED (connection
        cut), the failure to send, or the answer the request got (``carried_out``)."""
        if fault["delay_ms"]:
            self._stopping.wait(fault["delay_ms"] / 1000.0)
        if fault["drop"]:
            self._drop(environ)
            return DROPPED
        if fault["status"]:
            return self.fault_response(int(fault["status"]))
        return carried_out

    @staticmethod
    def _drop(environ) -> None:
        """Cut the connection under the request: the client sees it dropped, no response."""
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ------------------------------------------------------------------ control API
    def _control(self, request: Request) -> Response:
        if self._control_map is None:
            pairs = self._base_control_rules() + self.control_rules()
            self._control_handlers = {rule.endpoint: fn for rule, fn in pairs}
            self._control_map = Map([rule for rule, _ in pairs])
        try:
            endpoint, args = self._control_map.bind_to_environ(request.environ).match()
            return self._control_handlers[endpoint](request, **args)
        except HTTPException as exc:
            return json_response({"error": f"{exc.name}: {request.method} {request.path}"},
                                 exc.code or 500)
        except KeyError as exc:
            return json_response({"error": f"missing {exc.args[0]!r}"}, 400)
        except (ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, 400)

    def _base_control_rules(self) -> list[tuple[Rule, Callable[..., Response]]]:
        return [
            (Rule("/_sandbox/", endpoint="index", methods=["GET"]), self._c_index),
            (Rule("/_sandbox/faults", endpoint="faults", methods=["GET", "POST", "DELETE"]),
             self._c_faults),
            (Rule("/_sandbox/requests", endpoint="requests", methods=["GET", "DELETE"]),
             self._c_requests),
        ]

    @staticmethod
    def control_body(request: Request) -> dict:
        if not request.get_data():
            return {}
        body = json.loads(request.get_data().decode("utf-8"))
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        return body

    def _c_index(self, request: Request) -> Response:
        """``GET /_sandbox/``: the control routes, so that the address a person is shown answers."""
        routes = [{"methods": sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}), "path": rule.rule}
                  for rule in (self._control_map.iter_rules() if self._control_map is not None else ())
                  if rule.endpoint != "index"]
        return json_response({"emulator": type(self).__name__, "url": self.url,
                              "routes": sorted(routes, key=lambda r: r["path"])})

    def _c_faults(self, request: Request) -> Response:
        if request.method == "POST":
            self.faults.add_from_json(self.control_body(request))
            return json_response(self.faults.pending(), 201)
        if request.method == "DELETE":
            self.faults.clear()
        return json_response(self.faults.pending())

    def _c_requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.traffic.reset()
        return json_response(self.traffic.snapshot())

    # ------------------------------------------------------------------ in-process shortcuts
    def add_fault(self, count: int = 1, status: int | None = 500, delay_ms: int = 0,
                  drop: bool = False, path_prefix: str = "/", method: str | None = None,
                  phase: str = "before") -> None:
        self.faults.add(count, status, delay_ms, drop, path_prefix, method, phase)

    def add_fault_from_json(self, body: dict) -> None:
        self.faults.add_from_json(body)

    def clear_faults(self) -> None:
        self.faults.clear()

    def pending_faults(self) -> list[dict]:
        return self.faults.pending()

    def requests(self) -> dict:
        return self.traffic.snapshot()

    def reset_requests(self) -> None:
        self.traffic.reset()

    @property
    def max_per_second(self) -> int:
        return self.traffic.max_per_second
