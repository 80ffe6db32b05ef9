"""tests/unit is pure: no socket, no subprocess, no database file. The fixture below makes any
attempt fail the test (with a BaseException, so that code catching Exception cannot hide it, and
again at teardown in case something swallowed even that). A test that needs one of them belongs in
tests/integration."""

from __future__ import annotations

import socket
import sqlite3
import subprocess

import psycopg
import pytest
import urllib3.util.connection  # noqa: F401  (probes IPv6 with a socket when first imported)


class NotInUnitTests(BaseException):
    """Raised where a unit test reached for the network, a process or a database file."""


@pytest.fixture(autouse=True)
def pure(monkeypatch):
    attempts: list[str] = []

    def refuse(what: str):
        def _refuse(*args, **kwargs):
            attempts.append(what)
            raise NotInUnitTests(f"a unit test tried to {what}; move it to tests/integration")
        return _refuse

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse("open a socket")()

    monkeypatch.setattr(socket, "socket", NoSocket)
    for name in ("create_connection", "create_server", "socketpair", "fromfd"):
        monkeypatch.setattr(socket, name, refuse(f"open a socket (socket.{name})"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("start a subprocess"))
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv", "execve"):
        if hasattr(__import__("os"), name):
            monkeypatch.setattr(f"os.{name}", refuse(f"start a process (os.{name})"))
    real_connect = sqlite3.dbapi2.connect

    def memory_only(database, *args, **kwargs):
        if str(database) not in (":memory:", "") and "mode=memory" not in str(database):
            refuse(f"open the database file {database}")()
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", memory_only)
    monkeypatch.setattr(sqlite3.dbapi2, "connect", memory_only)  # what SQLAlchemy calls
    # libpq opens its sockets in C, out of the socket module's sight
    monkeypatch.setattr(psycopg, "connect", refuse("connect to PostgreSQL"))
    monkeypatch.setattr(psycopg.Connection, "connect", refuse("connect to PostgreSQL"))
    yield
    assert not attempts, f"a unit test tried to: {sorted(set(attempts))}"
