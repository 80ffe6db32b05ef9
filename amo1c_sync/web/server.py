"""Serve the endpoint with waitress (a maintained production WSGI server), in a background thread."""

from __future__ import annotations

import threading

import waitress.trigger as trigger
import waitress.wasyncore as wasyncore
from waitress.server import MultiSocketServer, create_server

from amo1c_sync.logs import get_logger

log = get_logger("amo1c_sync.web")


class WebServer:
    """A running waitress server: ``.host``, ``.port`` (the bound one; port 0 picks a free one),
    ``.url`` and ``.close()``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, threads: int = 4):
        self._server = create_server(app, host=host, port=port, threads=threads,
                                     ident="amo1c-sync", expose_tracebacks=False,
                                     channel_timeout=30)
        self.host = host
        if isinstance(self._server, MultiSocketServer):  # the host resolves to several addresses
            self.port = int(self._server.effective_listen[0][1])
        else:  # types-waitress does not list effective_port
            self.port = int(getattr(self._server, "effective_port", 0))
        self._thread = threading.Thread(target=self._server.run, name="amo1c-web", daemon=True)
        self._thread.start()
        self._closed = False
        log.info("http.listening", host=host, port=self.port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, close open connections, stop the worker threads."""
        if self._closed:
            return
        self._closed = True
        srv = self._server
        # one server, or several when the host name resolves to more than one address
        channels = (srv.map if isinstance(srv, MultiSocketServer) else getattr(srv, "_map", None)) or {}
        trig = next((ch for ch in list(channels.values()) if isinstance(ch, trigger.trigger)), None)

        def _shutdown() -> None:  # runs inside waitress's loop thread: no race with the loop
            wasyncore.close_all(channels)

        if trig is not None:
            try:
                # types-waitress says Callable[[None], ...]; waitress calls the thunk with no argument
                trig.pull_trigger(_shutdown)  # type: ignore[arg-type]
            except OSError:  # trigger already gone
                pass
        else:  # pragma: no cover - waitress always has a trigger
            _shutdown()
        self._thread.join(timeout)
        # types-waitress says int; waitress takes any number of seconds
        srv.task_dispatcher.shutdown(cancel_pending=True, timeout=timeout)  # type: ignore[arg-type]
        log.info("http.stopped", port=self.port)

    def __enter__(self) -> "WebServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(app, host: str = "127.0.0.1", port: int = 0, *, threads: int = 4) -> WebServer:
    """Start serving ``app`` on host:port in a background thread; returns the server."""
    return WebServer(app, host, port, threads=threads)


def serve_settings(settings, *, slot_finder, store=None, nudge=None) -> WebServer:
    """For the daemon: the endpoint on ``[http] host`` / ``[http] port``."""
    from amo1c_sync.web.app import create_app

    app = create_app(settings, slot_finder=slot_finder, store=store, nudge=nudge)
    return serve(app, settings.http.host, settings.http.port)
