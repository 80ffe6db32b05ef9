"""The state store: one SQLAlchemy engine, sessions, cross-process locks, and migrations."""

from __future__ import annotations

import hashlib
import math
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from amo1c_sync.errors import ConfigError
from amo1c_sync.logs import register_secret
from amo1c_sync.resources import installed_dir
from amo1c_sync.store import pgtimeout
from amo1c_sync.store.pgtimeout import GRACE_S, client_keepalives

if TYPE_CHECKING:
    from alembic.config import Config

DEFAULT_TIMEOUT = 10.0   # seconds; [store] timeout
DB_CHUNK = 500            # ids per IN (...) in store queries

T_ = TypeVar("T_")


def chunks(seq: Iterable[T_], n: int = DB_CHUNK) -> Iterator[list[T_]]:
    """``seq`` in lists of at most ``n``: an IN (...) of any length stays under the databases' limits."""
    items = list(seq)
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _migrations_dir() -> Path:
    """migrations/ of the source checkout (editable install), else the copy inside the wheel."""
    source = Path(__file__).resolve().parent.parent.parent / "migrations"
    if (source / "env.py").is_file():
        return source
    return installed_dir("amo1c_sync._migrations") or source


MIGRATIONS_DIR = _migrations_dir()


def sqlite_url_for(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def advisory_lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_*lock: the one derivation used by the store's
    exclusive sections and by the leader and migration locks."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _private_file(path: Path) -> None:
    """Create the SQLite file owner-only before SQLite opens it, whatever the umask: it holds the
    OAuth tokens. SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if part.exists() and part.stat().st_mode & 0o077:
            part.chmod(0o600)


class Store:
    """Owns the engine. Use ``session()`` for ordinary work and ``exclusive(name)`` where only one
    process at a time may run (token refresh): it holds a lock that spans processes for the
    duration of one transaction."""

    def __init__(self, url: str, *, echo: bool = False, timeout: float = DEFAULT_TIMEOUT):
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError) as exc:  # both carry the url (and so a password) in their text
            raise ConfigError(f"[store] url: not a database URL; use sqlite:///path/state.db or "
                              f"postgresql+psycopg://user@host/db ({type(exc).__name__})") from None
        self.url = url
        register_secret(parsed.password)
        self.timeout = float(timeout)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.dialect == "sqlite":
            db = parsed.database
            if db and db != ":memory:":
                _private_file(Path(db))
            kwargs["connect_args"] = {"timeout": self.timeout, "check_same_thread": False}
        elif self.dialect == "postgresql":
            kwargs.update(pool_pre_ping=True, pool_timeout=self.timeout,
                          connect_args=self._pg_connect_args(parsed))
        else:
            raise ConfigError(f"[store] url: backend {self.dialect!r} is not supported; "
                              "use sqlite:/// or postgresql+psycopg://")
        self.engine: Engine = create_engine(parsed, **kwargs)
        if self.dialect == "sqlite":
            self._sqlite_tweaks(self.engine, self.timeout)
        else:
            self._pg_timed(self.engine, self.timeout + GRACE_S)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._local_locks: dict[str, threading.Lock] = {}
        self._local_guard = threading.Lock()

    def _pg_connect_args(self, parsed: URL) -> dict[str, Any]:
        """Every wait bounded: the connect, each statement and lock wait on the server, a dead
        peer through keepalives and ``tcp_user_timeout``, and (``_pg_timed``) any round trip the
        server does not answer at all."""
        ms = int(self.timeout * 1000)
        options = f"-c statement_timeout={ms} -c lock_timeout={ms}"
        if parsed.query.get("options"):
            options += f" {parsed.query['options']}"   # the URL's own settings win
        return {"connect_timeout": max(2, math.ceil(self.timeout)), "options": options,
                **client_keepalives(self.timeout)}

    @staticmethod
    def _pg_timed(engine: Engine, limit: float) -> None:
        @event.listens_for(engine, "do_connect")
        def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            return pgtimeout.connect(*cargs, op_timeout=limit, **cparams)

    @staticmethod
    def _sqlite_tweaks(engine: Engine, timeout: float) -> None:
        # pysqlite opens transactions lazily and never with BEGIN IMMEDIATE; take control of BEGIN,
        # and turn on WAL so that readers never wait for the writer.
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        # Every transaction takes the write lock at BEGIN: with a deferred BEGIN, a transaction
        # that reads and then writes after another connection committed fails at once with
        # "database is locked" (busy_timeout cannot help); IMMEDIATE makes writers queue instead.
        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any exception."""
        with self._sessions() as s, s.begin():
            yield s

    @contextmanager
    def rolled_back(self) -> Iterator[Session]:
        """A transaction that is always rolled back: what a dry run writes, nobody ever sees."""
        with self._sessions() as s:
            s.begin()
            try:
                yield s
            finally:
                s.rollback()

    @contextmanager
    def exclusive(self, name: str) -> Iterator[Session]:
        """A transaction that no other thread or process using this store runs at the same time
        under the same name."""
        with self._local_guard:
            local = self._local_locks.setdefault(name, threading.Lock())
        with local:
            with self._sessions() as s:
                if self.dialect == "sqlite":
                    s.connection()  # BEGIN IMMEDIATE: the file's write lock, across processes
                else:
                    s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_lock_key(name)})
                try:
                    yield s
                    s.commit()
                except BaseException:
                    s.rollback()
                    raise

    def upgrade(self, revision: str = "head") -> None:
        """Apply Alembic migrations up to ``revision``."""
        from alembic import command

        command.upgrade(self.alembic_config(), revision)

    def alembic_config(self) -> Config:
        from alembic.config import Config

        if not MIGRATIONS_DIR.is_dir():
            raise ConfigError(f"migrations not found at {MIGRATIONS_DIR}; the installation is "
                              "incomplete: reinstall amo1c-sync")
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["engine"] = self.engine
        return cfg

    def dispose(self) -> None:
        self.engine.dispose()
