"""Engines and sessions for any SQLAlchemy URL, with numbered migrations."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from db.models import Base, SchemaMigration


def _create_tables(engine: Engine) -> None:
    Base.metadata.create_all(engine)


def _experiments(engine: Engine) -> None:
    """Experiments, the runs' link to them, and the uniqueness that makes resuming safe."""
    Base.metadata.tables["experiments"].create(engine, checkfirst=True)
    columns = {c["name"] for c in inspect(engine).get_columns("runs")}
    with engine.begin() as conn:
        if "experiment_id" not in columns:
            conn.execute(text("ALTER TABLE runs ADD COLUMN experiment_id INTEGER REFERENCES experiments(id)"))
        if "config_key" not in columns:
            conn.execute(text("ALTER TABLE runs ADD COLUMN config_key VARCHAR(300)"))
        for index in ("uq_runs_experiment_config ON runs (experiment_id, config_key)",
                      "uq_items_run_source ON items (run_id, source_id)",
                      "uq_outputs_condition_seed ON outputs (condition_id, seed)"):
            conn.execute(text(f"CREATE UNIQUE INDEX IF NOT EXISTS {index}"))


def _tags(engine: Engine) -> None:
    Base.metadata.tables["tags"].create(engine, checkfirst=True)


def _review(engine: Engine) -> None:
    for name in ("review_tasks", "review_items", "review_labels"):  # parents before children
        Base.metadata.tables[name].create(engine, checkfirst=True)


# (version, name, step). Steps after the first alter existing tables and check before they change:
# a new database gets every table from step 1 already in its latest form.
MIGRATIONS: list[tuple[int, str, Callable[[Engine], None]]] = [
    (1, "runs, items, conditions, outputs, metrics, jobs", _create_tables),
    (2, "experiments; unique run config, item and output keys", _experiments),
    (3, "tags on runs", _tags),
    (4, "review tasks, items and annotators' labels", _review),
]


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
