"""The SQLite store holds the OAuth tokens: its files are owner-only whatever the umask."""

import os
import stat

import pytest

from amo1c_sync.store import Store, sqlite_url_for


@pytest.fixture
def open_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_given_umask_022_when_a_new_sqlite_store_is_migrated_then_db_wal_and_shm_are_0600(tmp_path, open_umask):
    db = tmp_path / "state" / "amo1c-sync.db"
    store = Store(sqlite_url_for(db))
    store.upgrade()
    with store.session() as s:
        s.connection()  # the WAL and shared-memory files exist while a connection is open
        files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
    store.dispose()


def test_given_a_store_file_readable_by_others_when_opened_then_it_is_made_owner_only(tmp_path, open_umask):
    db = tmp_path / "amo1c-sync.db"
    db.touch(mode=0o644)
    db.chmod(0o644)
    store = Store(sqlite_url_for(db))
    store.upgrade()
    store.dispose()
    assert _mode(db) == 0o600
