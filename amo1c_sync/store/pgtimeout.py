"""PostgreSQL connections on which no round trip can block for longer than its limit.

libpq has no read timeout. ``connect_timeout`` bounds the connect, ``statement_timeout`` bounds
what a live server executes, and keepalives / ``tcp_user_timeout`` notice a peer whose kernel has
stopped acknowledging; none of them helps when the peer's TCP stack is alive but nothing answers
(a hung server, a stalled proxy or load balancer): the query then waits in recv() for ever.

So every wait of a :class:`TimedConnection` is watched by one thread. Past its limit the socket is
shut down under the waiting call, which turns it into an error at once; the error says that
PostgreSQL did not answer in time, the connection is broken (the pool discards it), and a line is
logged the moment it happens.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from typing import Any, TypeVar

import psycopg
from psycopg.abc import PQGen

from amo1c_sync.logs import get_logger

log = get_logger("amo1c_sync.store")

RV = TypeVar("RV")

GRACE_S = 2.0   # the client's limit exceeds the server's own timeouts by this much


class StoreNotAnswering(psycopg.OperationalError):
    """A round trip to PostgreSQL exceeded its limit; the connection was dropped."""


class _Watchdog:
    """Deadlines of the waits in progress; shuts down the socket of any wait past its own."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, int, float, str]] = {}   # key -> deadline, fd, limit, what
        self._fired: set[int] = set()
        self._keys = itertools.count(1)
        self._thread: threading.Thread | None = None

    def arm(self, fd: int, limit: float, what: str) -> int:
        with self._cond:
            key = next(self._keys)
            self._armed[key] = (time.monotonic() + limit, fd, limit, what)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="store-watchdog", daemon=True)
                self._thread.start()
            elif len(self._armed) == 1:
                self._cond.notify()
            return key

    def disarm(self, key: int) -> bool:
        """Forget ``key``; True when its deadline passed and its socket was shut down."""
        with self._cond:
            self._armed.pop(key, None)
            if key in self._fired:
                self._fired.discard(key)
                return True
            return False

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._armed:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                for key, (deadline, fd, limit, what) in list(self._armed.items()):
                    if deadline <= now:
                        # under the lock: the owner cannot disarm (and close the fd) meanwhile
                        del self._armed[key]
                        self._fired.add(key)
                        self._cut(fd, limit, what)
                nearest = min((d for d, *_ in self._armed.values()), default=now + 1.0)
                self._cond.wait(max(0.05, min(0.5, nearest - now)))

    @staticmethod
    def _cut(fd: int, limit: float, what: str) -> None:
        log.error("store.not_answering", connection=what, waited_s=round(limit, 1),
                  action="connection dropped; the operation fails and is tried again later")
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=os.dup(fd))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


_WATCHDOG = _Watchdog()


class TimedConnection(psycopg.Connection):
    """A psycopg connection whose every wait on the server (query, commit, rollback, ping) is
    limited to ``op_timeout`` seconds (``None`` or 0: unlimited)."""

    op_timeout: float | None = None
    what: str = "store"

    def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
        limit = self.op_timeout
        if not limit:
            return super().wait(gen, *args, **kwargs)
        armed = _WATCHDOG.arm(self.pgconn.socket, limit, self.what)
        key: int | None = armed
        try:
            return super().wait(gen, *args, **kwargs)
        except (psycopg.Error, OSError):
            fired, key = _WATCHDOG.disarm(armed), None
            if fired:
                raise StoreNotAnswering(
                    f"PostgreSQL did not answer within {limit:g} s ({self.what}); the connection "
                    "was dropped") from None
            raise
        finally:
            if key is not None:
                _WATCHDOG.disarm(key)


def connect(conninfo: str = "", *, op_timeout: float | None, what: str = "store",
            **kwargs: Any) -> TimedConnection:
    """``psycopg.connect`` for a :class:`TimedConnection` (the connect itself is bounded by
    ``connect_timeout``)."""
    conn = TimedConnection.connect(conninfo, **kwargs)
    conn.op_timeout = op_timeout
    conn.what = what
    return conn


def client_keepalives(timeout: float) -> dict[str, int]:
    """libpq parameters that make the client notice a dead peer within about ``timeout``."""
    t = max(2, int(round(timeout)))
    return {"keepalives": 1, "keepalives_idle": max(1, t // 2), "keepalives_interval": max(1, t // 6),
            "keepalives_count": 3, "tcp_user_timeout": t * 1000}
