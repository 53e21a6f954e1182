"""Engines and sessions for any SQLAlchemy URL, migrated (``db.migrations``) before first use."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, make_url, select
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.errors import UserError
from db.migrations import MIGRATIONS
from db.models import SchemaMigration


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # The worker writes while pages read: WAL lets both proceed; foreign keys make cascades real.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def driver_url(url: str) -> str:
    """``url`` with the PostgreSQL driver this project installs (psycopg 3), when it names none."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url.removeprefix(plain)
    return url


def get_engine(url: str) -> Engine:
    """One engine per URL per process, migrated before first use (the page and the worker race for it)."""
    with _engines_lock:
        if url not in _engines:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
            try:
                engine = create_engine(driver_url(url), pool_pre_ping=True,
                                       connect_args={"check_same_thread": False} if url.startswith("sqlite") else {})
            except (ArgumentError, ModuleNotFoundError) as exc:
                raise UserError(f"Not a database URL this app can open: {shown(url)} ({exc}). Use sqlite:///PATH "
                                "or postgresql://USER:PASSWORD@HOST/DATABASE.") from None
            if url.startswith("sqlite"):
                event.listen(engine, "connect", _sqlite_pragmas)
            try:
                migrate(engine)
            except OperationalError as exc:
                engine.dispose()
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                raise UserError(f"Cannot open the database at {shown(url)}: {reason}") from None
            _engines[url] = engine
        return _engines[url]


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(driver_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def migrate(engine: Engine) -> None:
    SchemaMigration.__table__.create(engine, checkfirst=True)
    with Session(engine) as session:
        done = set(session.scalars(select(SchemaMigration.version)))
        for version, name, step in MIGRATIONS:
            if version in done:
                continue
            step(engine)
            session.add(SchemaMigration(version=version, name=name))
            session.commit()


def schema_version(url: str) -> int:
    with session_scope(url) as session:
        return max(session.scalars(select(SchemaMigration.version)), default=0)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error, so nothing half-written stays."""
    session = sessionmaker(get_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
