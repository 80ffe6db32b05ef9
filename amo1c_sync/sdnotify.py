"""A tiny sd_notify(3) client: one datagram to $NOTIFY_SOCKET per call.

Hand-written rather than the ``sdnotify`` package because the protocol is a dozen lines (one
AF_UNIX datagram of ``KEY=VALUE`` lines, ``@`` meaning the abstract namespace), the package is
unmaintained since 2017 and does not handle abstract sockets or the watchdog interval. Outside
systemd (no $NOTIFY_SOCKET) every call is a no-op, so the daemon can call it unconditionally.
"""

from __future__ import annotations

import os
import socket
import threading


class Notifier:
    """systemd's notify socket (``$NOTIFY_SOCKET``); does nothing without one."""

    def __init__(self, address: str | None = None):
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def _target(self) -> str | bytes:
        if self.address.startswith("@"):
            return b"\0" + self.address[1:].encode()
        return self.address

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines (keys upper-cased). False when not under systemd or on error."""
        if not self.enabled:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value).replace("\n", " ")
            lines.append(f"{key.upper()}={text}")
        payload = "\n".join(lines).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, self._target())
                return True
            except OSError:
                return False

    def ready(self, status: str | None = None) -> bool:
        fields: dict[str, object] = {"READY": 1, "MAINPID": os.getpid()}
        if status:
            fields["STATUS"] = status
        return self.notify(**fields)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        fields: dict[str, object] = {"STOPPING": 1}
        if status:
            fields["STATUS"] = status
        return self.notify(**fields)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text[:400])

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when no watchdog is set
    for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        return max(int(usec) / 1e6 / 2, 0.1)
    except ValueError:
        return None
