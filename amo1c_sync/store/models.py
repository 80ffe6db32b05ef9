"""State kept between runs. Every change here needs an Alembic revision in migrations/versions."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which drops the zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to a UTC column")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Money(TypeDecorator[Decimal]):
    """Exact decimal kept as text: SQLite's NUMERIC would round through float."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be Decimal, got {type(value).__name__}")
        return format(value, "f")

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class Base(DeclarativeBase):
    """The declarative base: JSON, UTC datetimes and money as exact text."""

    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime, Decimal: Money}


class Cursor(Base):
    """Where an incremental poll resumes (store/cursors.py: the registration cursor, the last
    full payments scan, the registration's events read with its open leads, as JSON)."""

    __tablename__ = "cursors"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DoctorOption(Base):
    """A 1C doctor's «Врач» option in amoCRM (F4): a doctor renamed in 1C keeps its option."""

    __tablename__ = "doctor_options"

    doctor_ref: Mapped[str] = mapped_column(String(36), primary_key=True)
    enum_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DaemonInstance(Base):
    """A running daemon's heartbeat: what `status` shows as leader and standbys."""

    __tablename__ = "daemon_instances"

    instance: Mapped[str] = mapped_column(String(100), primary_key=True)  # host:pid
    host: Mapped[str] = mapped_column(String(60))
    pid: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(20))  # leader | standby
    since: Mapped[datetime | None]
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class OAuthToken(Base):
    """The amoCRM token pair. ``generation`` grows on every refresh so that a stale writer loses."""

    __tablename__ = "oauth_tokens"

    account: Mapped[str] = mapped_column(String(200), primary_key=True)
    access_token: Mapped[str] = mapped_column(Text)
    refresh_token: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime]
    generation: Mapped[int] = mapped_column(Integer, default=0)
    revoked_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Registration(Base):
    """One lead -> its «Заявка» in 1C (F2). A failure's bookkeeping is its RetryItem."""

    __tablename__ = "registrations"

    lead_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    zayavka_ref: Mapped[str | None] = mapped_column(String(36))
    zayavka_number: Mapped[str | None] = mapped_column(String(50))
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    # pending | done | invalid | failed (failed: see its RetryItem) | deleted (the lead is gone)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    # the note written on an invalid lead
    error: Mapped[str | None] = mapped_column(Text)
    # a create of its «Заявка» was sent at this time and its answer not recorded yet: a later
    # attempt looks the «Заявка» up until [sync] create_settle_seconds after it before creating
    create_sent_at: Mapped[datetime | None]
    # the process registering the lead now, and until when its claim holds (store/registrations.py)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OnecDocument(Base):
    """A seen «Оказание услуг» document with the DataVersion it was last counted at (F3)."""

    __tablename__ = "onec_documents"
    __table_args__ = (Index("ix_onec_documents_lead_id", "lead_id"),
                      Index("ix_onec_documents_base_ref", "base_ref"),
                      Index("ix_onec_documents_doc_date", "doc_date"))

    ref: Mapped[str] = mapped_column(String(36), primary_key=True)
    data_version: Mapped[str] = mapped_column(String(100))
    number: Mapped[str | None] = mapped_column(String(50))
    doc_date: Mapped[datetime | None]
    lead_id: Mapped[int | None] = mapped_column(BigInteger)
    # the base «Заявка» (its lead comes from OnecBase); None: no base, or not a «Заявка»
    base_ref: Mapped[str | None] = mapped_column(String(36))
    amount: Mapped[Decimal | None]
    posted: Mapped[bool] = mapped_column(Boolean, default=False)
    deletion_mark: Mapped[bool] = mapped_column(Boolean, default=False)
    # why it does not count for any lead (no base «Заявка», no «Номер AmoCRM» …); None = it counts
    skip_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OnecBase(Base):
    """A base «Заявка» of counted documents: its «Номер AmoCRM» at the DataVersion it was read at
    (F3), so a known base is not looked up again and a changed one re-evaluates its documents."""

    __tablename__ = "onec_bases"

    ref: Mapped[str] = mapped_column(String(36), primary_key=True)
    data_version: Mapped[str] = mapped_column(String(100))
    lead_raw: Mapped[str | None] = mapped_column(String(200))  # None: empty, or the «Заявка» is gone
    doc_date: Mapped[datetime | None]  # the «Заявка»'s own Date: where a scan of «Заявки» starts
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LeadTotal(Base):
    """The payment total last accepted by amoCRM for a lead. A failure's bookkeeping is its
    RetryItem."""

    __tablename__ = "lead_totals"

    lead_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    pushed_total: Mapped[Decimal | None]
    pushed_at: Mapped[datetime | None]
    # the total of a PATCH sent and not yet confirmed (intent); set: push again, whatever the total
    pushing_total: Mapped[Decimal | None]
    # ok | pending | failed (failed: see its RetryItem)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RetryItem(Base):
    """Why one lead's registration or payment total failed, and when it may be tried again.

    ``state``: ``retrying`` (a passing fault: again at ``next_attempt_at``), ``item_error`` (it
    cannot succeed as it is) or ``given_up`` ([retry] item_max_attempts reached); the last two wait
    until the item changes: the lead's ``updated_at`` differs from ``version`` (registration), or
    a document of the lead has a new DataVersion (payment)."""

    __tablename__ = "retry_items"

    kind: Mapped[str] = mapped_column(String(20), primary_key=True)  # registration | payment
    lead_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    state: Mapped[str] = mapped_column(String(20))
    error: Mapped[str] = mapped_column(Text)
    code: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    version: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobRun(Base):
    """One run of one job: the line `status` shows."""

    __tablename__ = "job_runs"
    __table_args__ = (Index("ix_job_runs_job_started", "job", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(50))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # running | ok | partial | failed | interrupted
    status: Mapped[str] = mapped_column(String(20), default="running")
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)


class JournalEntry(Base):
    """Every change written to either system, and every decision worth tracing for a lead."""

    __tablename__ = "journal"
    __table_args__ = (
        Index("ix_journal_lead_id", "lead_id"),
        Index("ix_journal_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    run_id: Mapped[int | None] = mapped_column(Integer)
    job: Mapped[str] = mapped_column(String(50))
    # amocrm | 1c | store
    system: Mapped[str] = mapped_column(String(20))
    # e.g. zayavka.created, zayavka.updated, lead.total_pushed, lead.note, document.skipped
    action: Mapped[str] = mapped_column(String(60))
    lead_id: Mapped[int | None] = mapped_column(BigInteger)
    ref: Mapped[str | None] = mapped_column(String(36))
    message: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class LifecycleZayavka(Base):
    """A «Заявка» the lifecycle follows (F7): the state last mirrored to its lead, the DataVersion
    it was mirrored at, the stages it has moved the lead to, and the write under way (``pending``:
    the intent recorded before the amoCRM write, cleared by the confirmation after it)."""

    __tablename__ = "lifecycle_zayavki"
    __table_args__ = (Index("ix_lifecycle_zayavki_lead_id", "lead_id"),)

    ref: Mapped[str] = mapped_column(String(36), primary_key=True)
    data_version: Mapped[str] = mapped_column(String(100))
    number: Mapped[str] = mapped_column(String(50))
    lead_id: Mapped[int | None] = mapped_column(BigInteger)
    # the state mirrored: domain.lifecycle.Appointment as JSON (None for a skipped «Заявка»)
    mirrored: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    passed: Mapped[list[Any]] = mapped_column(JSON, default=list)   # stage ids moved to
    done: Mapped[list[Any]] = mapped_column(JSON, default=list)     # [stages] keys handled
    pending: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    skip_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CardCancel(Base):
    """A cancel pressed on the card (F7) that is under way: recorded before the 1C write, removed
    by the confirmation after the lead's note and PATCH, so a crash or the registration cursor
    moving on never loses it."""

    __tablename__ = "lifecycle_card_cancels"

    lead_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    zayavka_ref: Mapped[str | None] = mapped_column(String(36))
    number: Mapped[str | None] = mapped_column(String(50))
    note: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
