"""Optional HTTP endpoint of the daemon: /slots, /register, /healthz, /metrics (waitress)."""

from amo1c_sync.web.app import create_app, parse_date
from amo1c_sync.web.server import WebServer, serve, serve_settings

__all__ = ["WebServer", "create_app", "parse_date", "serve", "serve_settings"]
