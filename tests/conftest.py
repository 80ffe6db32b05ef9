import os

import pytest

from amo1c_sync.store import Store, sqlite_url_for
from tests.support.pg import pg_available, temporary_database

REQUIRE_PG = os.environ.get("AMO1C_REQUIRE_PG") == "1"


@pytest.fixture
def sqlite_url(tmp_path):
    return sqlite_url_for(tmp_path / "state.db")


@pytest.fixture
def sqlite_store(tmp_path):
    """A migrated store in a SQLite file, for tests that need no PostgreSQL run."""
    s = Store(sqlite_url_for(tmp_path / "state.db"))
    s.upgrade()
    yield s
    s.dispose()


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this test session. In CI (AMO1C_REQUIRE_PG=1) an
    unreachable server fails the test instead of skipping it."""
    why = pg_available()
    if why:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required (AMO1C_REQUIRE_PG=1) but unreachable: {why}")
        pytest.skip(f"PostgreSQL unreachable: {why}")
    with temporary_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """Run a test once on a SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_url_for(tmp_path / "state.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url):
    """A migrated, empty store. On PostgreSQL the tables are emptied afterwards, since the database
    is shared by the whole session."""
    s = Store(store_url)
    s.upgrade()
    yield s
    if s.dialect == "postgresql":
        from amo1c_sync.store.models import Base

        with s.engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    s.dispose()


def pytest_collection_modifyitems(config, items):
    if os.environ.get("AMO1C_SKIP_PG") == "1":
        skip = pytest.mark.skip(reason="AMO1C_SKIP_PG=1")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)
