from datetime import datetime, timezone

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from amo1c_sync.store.models import Base, Cursor, DaemonInstance, DoctorOption, Registration, RetryItem


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


def _fresh_store(store_url):
    """A store of its own at no revision (on PostgreSQL the shared database is emptied first)."""
    from amo1c_sync.store import Store

    s = Store(store_url)
    with s.engine.begin() as conn:
        for table in ("alembic_version", *reversed([t.name for t in Base.metadata.sorted_tables])):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    return s


def test_given_failed_items_at_0001_when_upgraded_then_their_retry_records_arrive(store_url):
    s = _fresh_store(store_url)
    try:
        s.upgrade("0001")
        with s.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO registrations (lead_id, status, error, attempts, next_attempt_at, updated_at) VALUES "
                "(1, 'failed', '1C did not answer', 2, '2026-01-01 10:00:00+00:00', '2026-01-01 09:00:00+00:00'),"
                "(2, 'failed', 'given up', 5, NULL, '2026-01-01 09:00:00+00:00'),"
                "(3, 'done', NULL, 0, NULL, '2026-01-01 09:00:00+00:00')"))
            conn.execute(text(
                "INSERT INTO lead_totals (lead_id, status, error, attempts, next_attempt_at, updated_at) VALUES "
                "(4, 'failed', 'amoCRM refused lead 4', 1, '2026-01-01 11:00:00+00:00', '2026-01-01 09:00:00+00:00'),"
                "(5, 'ok', NULL, 0, NULL, '2026-01-01 09:00:00+00:00')"))
        s.upgrade()
        with s.session() as session:
            items = {(r.kind, r.lead_id): r for r in session.scalars(select(RetryItem))}
            regs = {r.lead_id: r for r in session.scalars(select(Registration))}
        assert set(items) == {("registration", 1), ("registration", 2), ("payment", 4)}
        one, two, four = items[("registration", 1)], items[("registration", 2)], items[("payment", 4)]
        assert (one.state, one.error, one.attempts) == ("retrying", "1C did not answer", 2)
        assert one.next_attempt_at == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
        assert (two.state, two.attempts, two.next_attempt_at, two.version) == ("given_up", 5, None, None)
        assert (four.state, four.error, four.attempts) == ("retrying", "amoCRM refused lead 4", 1)
        assert regs[1].status == "failed"
        assert regs[1].error is None
        assert regs[3].status == "done"
        cols = {c["name"] for c in inspect(s.engine).get_columns("lead_totals")}
        assert not cols & {"error", "attempts", "next_attempt_at"}
    finally:
        with s.engine.begin() as conn:  # the PostgreSQL database is shared by the session
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        s.dispose()


def test_given_links_and_heartbeats_in_cursors_at_0002_when_upgraded_then_they_move_to_their_tables(store_url):
    s = _fresh_store(store_url)
    try:
        s.upgrade("0002")
        beat = ('{"pid":4242,"host":"clinic-1","role":"leader","at":"2026-01-01T09:00:00+00:00",'
                '"since":"2026-01-01T08:00:00+00:00"}')
        with s.engine.begin() as conn:
            conn.execute(text("INSERT INTO cursors (name, value, updated_at) VALUES "
                              "('registration.updated_at', '1640000000', '2026-01-01 09:00:00+00:00'),"
                              "('directory.doctor:8a5e0f47-0000-0000-0000-000000000001', '701', "
                              "'2026-01-01 09:00:00+00:00'),"
                              "('daemon.heartbeat.clinic-1:4242', :beat, '2026-01-01 09:00:05+00:00'),"
                              "('daemon.heartbeat.broken:1', 'not json', '2026-01-01 09:00:05+00:00')"),
                         {"beat": beat})
        s.upgrade()
        with s.session() as session:
            options = [(o.doctor_ref, o.enum_id) for o in session.scalars(select(DoctorOption))]
            daemons = list(session.scalars(select(DaemonInstance)))
            left = sorted(c.name for c in session.scalars(select(Cursor)))
        assert options == [("8a5e0f47-0000-0000-0000-000000000001", 701)]
        (d,) = daemons
        assert (d.instance, d.host, d.pid, d.role) == ("clinic-1:4242", "clinic-1", 4242, "leader")
        assert d.since == datetime(2026, 1, 1, 8, tzinfo=timezone.utc)
        assert d.seen_at == datetime(2026, 1, 1, 9, 0, 5, tzinfo=timezone.utc)
        assert left == ["registration.updated_at"]
    finally:
        with s.engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        s.dispose()
