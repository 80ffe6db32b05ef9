"""One active instance per store: only the holder of the lock runs jobs and writes.

* PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) held on a dedicated
  connection opened outside the SQLAlchemy pool, so that no pool recycling or pre-ping can drop
  it by accident. The server releases it the moment that connection ends. So that it also ends
  within about ``lease`` seconds when the leader's host or path dies silently, the connection
  asks the server for short TCP keepalives, ``tcp_user_timeout`` and ``idle_session_timeout``
  (the leader checks its lock every second or so, so only a leader that stopped checking idles
  that long). Every check has its own limit (``check_timeout``, below the lease): a leader whose
  check gets no answer counts the lock as lost and stops before the server can hand it on.
* SQLite: ``fcntl.flock`` on ``<database>.lock`` next to the database file; the kernel releases
  it when the process dies, whatever the way.

The standby calls ``try_acquire()`` every few seconds; the leader calls ``still_held()`` (or
``fence()``, which raises) before each job and between items.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
from pathlib import Path
from typing import Iterator, Protocol

from sqlalchemy.engine import make_url

from amo1c_sync.logs import get_logger
from amo1c_sync.store import pgtimeout
from amo1c_sync.store.db import advisory_lock_key

log = get_logger("amo1c_sync.leader")

LEADER_LOCK_NAME = "amo1c-sync.leader"
MIGRATE_LOCK_NAME = "amo1c-sync.migrate"
DEFAULT_LEASE = 15.0   # seconds; [store] lock_lease


class LeadershipLost(Exception):
    """``fence()``: this process can no longer confirm that it holds the leader lock."""


def libpq_url(sqlalchemy_url: str) -> str:
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class LeaderLock(Protocol):
    """One lock per store: at most one process holds it and writes."""

    description: str

    def try_acquire(self) -> bool: ...

    def still_held(self) -> bool: ...

    def fence(self) -> None: ...

    def release(self) -> None: ...


class PgAdvisoryLock:
    """Session advisory lock on its own connection (autocommit, every round trip timed)."""

    def __init__(self, url: str, name: str = LEADER_LOCK_NAME, *, connect_timeout: int = 5,
                 lease: float = DEFAULT_LEASE, check_timeout: float | None = None):
        self._conninfo = libpq_url(url)
        self.key = advisory_lock_key(name)
        self.name = name
        self.connect_timeout = connect_timeout
        self.lease = float(lease)
        self.check_timeout = float(check_timeout if check_timeout is not None else check_timeout_for(lease))
        self._conn: pgtimeout.TimedConnection | None = None
        self._held = False
        self._guard = threading.Lock()
        safe = make_url(url)
        self.description = f"PostgreSQL advisory lock {name!r} on {safe.host or 'localhost'}/{safe.database}"

    def _connect(self) -> pgtimeout.TimedConnection:
        conn = pgtimeout.connect(
            self._conninfo, op_timeout=self.check_timeout, what="leader lock", autocommit=True,
            connect_timeout=max(2, int(self.connect_timeout)),
            application_name=f"amo1c-sync leader {socket.gethostname()}:{os.getpid()}",
            **pgtimeout.client_keepalives(self.lease))
        try:
            for setting, value in server_lease_settings(self.lease, conn.info.server_version):
                conn.execute(f"SET {setting} = {int(value)}")
        except Exception:
            conn.close()
            raise
        return conn

    def _drop(self) -> None:
        self._held = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def try_acquire(self) -> bool:
        with self._guard:
            if self._held:
                return self._check_locked()
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                self._held = bool(row and row[0])
            except Exception as exc:  # noqa: BLE001 - server away: we are not the leader
                log.warning("leader.lock_error", lock=self.description,
                            error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                self._drop()
            return self._held

    def _check_locked(self) -> bool:
        if self._conn is None:  # dropped: the lock went with its connection
            self._held = False
            return False
        try:
            row = self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid = pg_backend_pid()"
                " AND objid = (%s::bigint & 4294967295)::oid"
                " AND classid = ((%s::bigint >> 32) & 4294967295)::oid",
                (self.key, self.key)).fetchone()
            if not row or not row[0]:
                self._held = False
        except Exception as exc:  # noqa: BLE001 - connection broken: the lock is gone with it
            log.warning("leader.lock_lost", lock=self.description,
                        error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            self._drop()
        return self._held

    def still_held(self) -> bool:
        with self._guard:
            if not self._held or self._conn is None:
                return False
            return self._check_locked()

    def fence(self) -> None:
        if not self.still_held():
            raise LeadershipLost(f"{self.description} is no longer confirmed")

    def release(self) -> None:
        with self._guard:
            if self._conn is not None and self._held:
                with contextlib.suppress(Exception):
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            self._drop()


class FileLock:
    """``flock(LOCK_EX | LOCK_NB)`` on a lock file; the holder's pid is written into it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.description = f"lock file {self.path}"
        self._fd: int | None = None
        self._inode: int | None = None
        self._guard = threading.Lock()

    def try_acquire(self) -> bool:
        with self._guard:
            if self._fd is not None:
                return self._check()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd, self._inode = fd, os.fstat(fd).st_ino
            return True

    def _check(self) -> bool:
        # someone deleted or replaced the file: another process could lock the new one
        try:
            same = os.stat(self.path).st_ino == self._inode
        except FileNotFoundError:
            same = False
        if not same:
            log.warning("leader.lock_lost", lock=self.description, error="lock file removed or replaced")
            self._close()
            return False
        return True

    def still_held(self) -> bool:
        with self._guard:
            return self._fd is not None and self._check()

    def fence(self) -> None:
        if not self.still_held():
            raise LeadershipLost(f"{self.description} is no longer held")

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        with self._guard:
            self._close()


class AlwaysLeader:
    """For an in-memory SQLite store: nothing else can share it."""

    description = "in-memory store (no lock needed)"

    def try_acquire(self) -> bool:
        return True

    def still_held(self) -> bool:
        return True

    def fence(self) -> None:
        pass

    def release(self) -> None:
        pass


def _sqlite_path(store) -> Path | None:
    db = make_url(store.url).database
    if not db or db == ":memory:" or db.startswith("file::memory:"):
        return None
    return Path(db).resolve()


def check_timeout_for(lease: float) -> float:
    """A lock check must give up well before the server frees the lock of a silent leader."""
    return max(1.0, min(5.0, lease / 3))


def server_lease_settings(lease: float, server_version: int) -> list[tuple[str, float]]:
    """Per-session server settings that end the lock's session within about ``lease`` seconds
    once its client is gone: keepalive probes, unacknowledged data, and idleness (PostgreSQL 14+;
    ``tcp_user_timeout`` 12+)."""
    t = max(3, int(round(lease)))
    settings: list[tuple[str, float]] = [("tcp_keepalives_idle", max(1, t // 2)),
                                         ("tcp_keepalives_interval", max(1, t // 6)),
                                         ("tcp_keepalives_count", 3)]
    if server_version >= 120000:
        settings.append(("tcp_user_timeout", t * 1000))
    if server_version >= 140000:
        settings.append(("idle_session_timeout", t * 1000))
    return settings


def leader_lock_for(store, *, lease: float = DEFAULT_LEASE) -> LeaderLock:
    if store.dialect == "postgresql":
        return PgAdvisoryLock(store.url, connect_timeout=max(2, int(store.timeout)), lease=lease)
    path = _sqlite_path(store)
    if path is None:
        return AlwaysLeader()
    return FileLock(path.with_name(path.name + ".lock"))


@contextlib.contextmanager
def migration_lock(store, *, timeout: float = 300.0) -> Iterator[None]:
    """Serialise ``store.upgrade()`` between instances starting at the same time."""
    if store.dialect == "postgresql":
        with pgtimeout.connect(libpq_url(store.url), op_timeout=timeout + pgtimeout.GRACE_S,
                               what="migration lock", autocommit=True, connect_timeout=10,
                               **pgtimeout.client_keepalives(store.timeout)) as conn:
            conn.execute(f"SET lock_timeout = '{int(timeout)}s'")
            conn.execute("SELECT pg_advisory_lock(%s)", (advisory_lock_key(MIGRATE_LOCK_NAME),))
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (advisory_lock_key(MIGRATE_LOCK_NAME),))
        return
    path = _sqlite_path(store)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".migrate.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
