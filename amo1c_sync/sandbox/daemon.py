"""`amo1c-sync run` as a child process: the one launcher used by the sandbox story, the fault drill
and the daemon tests, so that the command line and the child's environment are written once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

# The child is not the unit systemd started: it must not talk to the parent's notify socket or
# watchdog, nor pick up the parent's credentials or state directory.
_NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY",
                  "STATE_DIRECTORY")
_PROXIES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")
LOOPBACK = "127.0.0.1,localhost,::1"


def child_env(extra: Mapping[str, str] | None = None, *, isolated: bool = False) -> dict[str, str]:
    """The environment of a child daemon. ``isolated`` also drops every ``AMO1C_*`` variable and
    proxy, so that the child reads only its sync.ini and talks to loopback directly."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    if isolated:
        env = {k: v for k, v in env.items() if not k.startswith("AMO1C_") and k not in _PROXIES}
        env["NO_PROXY"] = env["no_proxy"] = LOOPBACK
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def daemon_command(config: str | Path, *args: str, entry: Sequence[str] = ("-m", "amo1c_sync"),
                   log_format: str | None = None) -> list[str]:
    """``python -m amo1c_sync --config INI [--log-format F] ARGS``; ``entry`` replaces ``-m
    amo1c_sync`` (a test runs the CLI with a stand-in job registry that way)."""
    cmd = [sys.executable, *entry, "--config", str(config)]
    if log_format:
        cmd += ["--log-format", log_format]
    return cmd + list(args)


def launch_daemon(config: str | Path, log_path: str | Path, *args: str,
                  env: Mapping[str, str] | None = None, entry: Sequence[str] = ("-m", "amo1c_sync"),
                  log_format: str | None = "json", popen: Callable[..., subprocess.Popen] = subprocess.Popen,
                  **popen_kwargs) -> subprocess.Popen:
    """Start the daemon (``args`` default to ``run``) with its output appended to ``log_path``,
    working directory the log's folder. ``popen`` lets a caller fork from a thread of its choice."""
    log_path = Path(log_path)
    cmd = daemon_command(config, *(args or ("run",)), entry=entry, log_format=log_format)
    with open(log_path, "ab") as log:
        return popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                     cwd=str(log_path.parent), env=dict(env) if env is not None else child_env(),
                     **popen_kwargs)
