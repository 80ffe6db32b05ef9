"""What both emulators share: a WSGI app served on loopback in a thread, and fault injection."""

from __future__ import annotations

import socket
import threading
import time

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

DROPPED = object()  # what strike() returns when it cut the connection: send nothing


class QuietHandler(WSGIRequestHandler):
    """No access log line per request (tests make thousands); errors are still logged."""

    def log_request(self, *args, **kwargs) -> None:
        pass


class LoopbackEmulator:
    """``with Emulator() as emu: emu.url`` or ``start()`` / ``stop()``. Subclasses provide
    ``wsgi_app`` and call ``_take_fault(request)`` where a fault may strike."""

    thread_name = "emulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self._port = host, port
        self._lock = threading.RLock()
        self._faults: list[dict] = []
        self._server = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        if self._server is not None:
            return self
        self._server = make_server(self.host, self._port, self.wsgi_app, threaded=True,
                                   request_handler=QuietHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
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

    def wsgi_app(self, environ, start_response):  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    # ------------------------------------------------------------------ faults
    def add_fault(self, count: int = 1, status: int | None = 500, delay_ms: int = 0,
                  drop: bool = False, path_prefix: str = "/", method: str | None = None) -> None:
        """The next ``count`` requests under ``path_prefix`` (and ``method``) wait ``delay_ms``,
        then fail with ``status``, or lose their connection (``drop``)."""
        with self._lock:
            self._faults.append({"count": int(count), "status": status, "delay_ms": int(delay_ms),
                                 "drop": bool(drop), "path_prefix": path_prefix or "/",
                                 "method": method.upper() if method else None})

    def add_fault_from_json(self, body: dict) -> None:
        """``POST /_sandbox/faults`` of either emulator: a fault with neither a delay nor a drop
        fails with 500 unless it names a status."""
        default_status = 500 if not body.get("drop") and not body.get("delay_ms") else None
        self.add_fault(count=body.get("count", 1), status=body.get("status", default_status),
                       delay_ms=body.get("delay_ms", 0), drop=body.get("drop", False),
                       path_prefix=body.get("path_prefix") or "/", method=body.get("method"))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> list[dict]:
        with self._lock:
            return [dict(f) for f in self._faults if f["count"] > 0]

    def _take_fault(self, request: Request) -> dict | None:
        with self._lock:
            for fault in self._faults:
                if fault["count"] <= 0 or not request.path.startswith(fault["path_prefix"]):
                    continue
                if fault["method"] and fault["method"] != request.method:
                    continue
                fault["count"] -= 1
                taken = dict(fault)
                self._faults = [f for f in self._faults if f["count"] > 0]
                return taken
        return None

    def strike(self, request: Request, environ):
        """Apply the fault meant for this request, if any: wait its delay, then return DROPPED
        (the connection was cut), a Response (the failure to send), or None (go on normally)."""
        fault = self._take_fault(request)
        if fault is None:
            return None
        if fault["delay_ms"]:
            time.sleep(fault["delay_ms"] / 1000.0)
        if fault["drop"]:
            self._drop(environ)
            return DROPPED
        if fault["status"]:
            return self._fault_response(int(fault["status"]))
        return None

    def _fault_response(self, status: int) -> Response:  # pragma: no cover - per emulator
        """An injected failure as this system's server would send it."""
        raise NotImplementedError

    @staticmethod
    def _drop(environ) -> None:
        """Cut the connection under the request: the client sees it dropped, no response."""
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
