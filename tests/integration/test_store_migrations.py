from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from amo1c_sync.store.models import Base


def test_given_a_migrated_store_when_compared_with_the_models_then_no_difference(store):
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []
    assert set(inspect(store.engine).get_table_names()) >= set(Base.metadata.tables)


def test_given_a_migrated_store_when_upgraded_again_then_nothing_changes(store):
    store.upgrade()
    store.upgrade()
