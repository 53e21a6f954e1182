"""Engines and sessions for any SQLAlchemy URL, migrated (``db.migrations``) before first use."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.orm import Session, sessionmaker

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


def get_engine(url: str) -> Engine:
    """One engine per URL per process, migrated before first use (the page and the worker race for it)."""
    with _engines_lock:
        if url not in _engines:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False} if url.startswith("sqlite") else {})
            if url.startswith("sqlite"):
                event.listen(engine, "connect", _sqlite_pragmas)
            migrate(engine)
            _engines[url] = engine
        return _engines[url]


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
