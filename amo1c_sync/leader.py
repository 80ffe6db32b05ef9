"""One active instance per store (SPEC §5).

* PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) held on a dedicated
  connection opened outside the SQLAlchemy pool, so that no pool recycling or pre-ping can drop
  it by accident. The server releases it the moment that connection dies (process killed, host
  gone: TCP keepalives are on), and ``still_held()`` notices a broken connection.
* SQLite: ``fcntl.flock`` on ``<database>.lock`` next to the database file; the kernel releases
  it when the process dies, whatever the way.

The standby calls ``try_acquire()`` every few seconds; the leader calls ``still_held()`` before
each job.
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
from amo1c_sync.store.db import advisory_lock_key

log = get_logger("amo1c_sync.leader")

LEADER_LOCK_NAME = "amo1c-sync.leader"
MIGRATE_LOCK_NAME = "amo1c-sync.migrate"


def libpq_url(sqlalchemy_url: str) -> str:
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class LeaderLock(Protocol):
    description: str

    def try_acquire(self) -> bool: ...

    def still_held(self) -> bool: ...

    def release(self) -> None: ...


class PgAdvisoryLock:
    """Session advisory lock on its own psycopg connection (autocommit, keepalives on)."""

    def __init__(self, url: str, name: str = LEADER_LOCK_NAME, *, connect_timeout: int = 5):
        self._conninfo = libpq_url(url)
        self.key = advisory_lock_key(name)
        self.name = name
        self.connect_timeout = connect_timeout
        self._conn = None
        self._held = False
        self._guard = threading.Lock()
        safe = make_url(url)
        self.description = f"PostgreSQL advisory lock {name!r} on {safe.host or 'localhost'}/{safe.database}"

    def _connect(self):
        import psycopg

        return psycopg.connect(
            self._conninfo, autocommit=True, connect_timeout=self.connect_timeout,
            application_name=f"amo1c-sync leader {socket.gethostname()}:{os.getpid()}",
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
        )

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

    def release(self) -> None:
        pass


def _sqlite_path(store) -> Path | None:
    db = make_url(store.url).database
    if not db or db == ":memory:" or db.startswith("file::memory:"):
        return None
    return Path(db).resolve()


def leader_lock_for(store) -> LeaderLock:
    if store.dialect == "postgresql":
        return PgAdvisoryLock(store.url)
    path = _sqlite_path(store)
    if path is None:
        return AlwaysLeader()
    return FileLock(path.with_name(path.name + ".lock"))


@contextlib.contextmanager
def migration_lock(store, *, timeout: float = 300.0) -> Iterator[None]:
    """Serialise ``store.upgrade()`` between instances starting at the same time."""
    if store.dialect == "postgresql":
        import psycopg

        with psycopg.connect(libpq_url(store.url), autocommit=True, connect_timeout=10) as conn:
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
