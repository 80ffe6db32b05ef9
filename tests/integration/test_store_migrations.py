from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select

from amo1c_sync.store.models import Base, Cursor


def _diff(store):
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)


def _revision(store):
    with store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_given_a_migrated_store_when_compared_with_the_models_then_no_difference(store):
    assert _diff(store) == []
    assert set(inspect(store.engine).get_table_names()) >= set(Base.metadata.tables)


def test_given_a_migrated_store_with_data_when_upgraded_again_then_schema_revision_and_rows_stay(store):
    head = ScriptDirectory.from_config(store.alembic_config()).get_current_head()
    assert _revision(store) == head
    with store.session() as s:
        s.add(Cursor(name="upgrade-test", value="kept"))
    tables = set(inspect(store.engine).get_table_names())

    store.upgrade()
    store.upgrade()

    assert _revision(store) == head
    assert set(inspect(store.engine).get_table_names()) == tables
    assert _diff(store) == []
    with store.session() as s:
        assert s.scalar(select(Cursor.value).where(Cursor.name == "upgrade-test")) == "kept"
