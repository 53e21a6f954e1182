"""Numbered schema migrations, each frozen as the DDL it ran: a new database and one upgraded from
any earlier version end in the same schema, the one ``db.models`` describes (a test holds all three equal).

A migration never reads ``db.models``: a model changes with the code, a migration must not. Tables
are written out as SQLAlchemy Core tables, so the same step runs on SQLite and PostgreSQL. Steps
check before they change, so a database that got a table early (they once came from the models of
the day) is brought to the same end.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import (JSON, BigInteger, Boolean, Column, DateTime, Engine, Float, ForeignKey, Integer, MetaData, String, Table,
                        Text, UniqueConstraint, insert, inspect, select, text, update)


def _runs_stub(metadata: MetaData) -> Table:
    """The runs table as far as a later step's foreign keys need it; never created from here."""
    return Table("runs", metadata, Column("id", Integer, primary_key=True))


def _v1_results(engine: Engine) -> None:
    metadata = MetaData()
    Table("runs", metadata,
          Column("id", Integer, primary_key=True),
          Column("created_at", DateTime, nullable=False, index=True),
          Column("kind", String(40), nullable=False),
          Column("model_id", String(500), nullable=False),
          Column("model_path", Text, nullable=False),
          Column("model_revision", String(100)),
          Column("model_kind", String(40), nullable=False),
          Column("model_parameters", Integer, nullable=False),
          Column("model_notes", JSON, nullable=False),
          Column("device", String(40), nullable=False),
          Column("dtype", String(40), nullable=False),
          Column("preset", String(40), nullable=False),
          Column("sampler_params", JSON, nullable=False),
          Column("seed", Integer, nullable=False),
          Column("compressor", String(80), nullable=False, index=True),
          Column("compressor_params", JSON, nullable=False),
          Column("ratio_requested", Float, nullable=False),
          Column("bertscore_backbone", String(200), nullable=False),
          Column("versions", JSON, nullable=False),
          Column("timings", JSON, nullable=False))
    Table("items", metadata,
          Column("id", Integer, primary_key=True),
          Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
          Column("source", String(80), nullable=False),
          Column("source_id", String(200)),
          Column("task", String(40), nullable=False),
          Column("prompt", Text, nullable=False),
          Column("gold_solution", Text),
          Column("gold_answer", String(100)),
          Column("reference", Text))
    Table("conditions", metadata,
          Column("id", Integer, primary_key=True),
          Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False, index=True),
          Column("name", String(40), nullable=False),
          Column("prompt_text", Text, nullable=False),
          Column("prompt_tokens", Integer, nullable=False),
          Column("prompt_tokens_cl100k", Integer),
          Column("ratio_achieved", Float, nullable=False),
          Column("words", JSON),
          Column("compress_seconds", Float, nullable=False),
          UniqueConstraint("item_id", "name"))
    Table("outputs", metadata,
          Column("id", Integer, primary_key=True),
          Column("condition_id", Integer, ForeignKey("conditions.id", ondelete="CASCADE"), nullable=False,
                 index=True),
          Column("seed", Integer, nullable=False),
          Column("text", Text, nullable=False),
          Column("token_ids", JSON, nullable=False),
          Column("extracted_answer", String(100)),
          Column("seconds", Float, nullable=False),
          Column("forward_calls", Integer, nullable=False))
    Table("metrics", metadata,
          Column("id", Integer, primary_key=True),
          Column("output_id", Integer, ForeignKey("outputs.id", ondelete="CASCADE"), nullable=False, index=True),
          Column("name", String(40), nullable=False),
          Column("reference", String(40), nullable=False),
          Column("value", Float, nullable=False),
          UniqueConstraint("output_id", "name", "reference"))
    Table("jobs", metadata,
          Column("id", Integer, primary_key=True),
          Column("kind", String(40), nullable=False),
          Column("params", JSON, nullable=False),
          Column("status", String(20), nullable=False, index=True),
          Column("progress", Float, nullable=False),
          Column("message", Text, nullable=False),
          Column("error", Text),
          Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
          Column("created_at", DateTime, nullable=False),
          Column("started_at", DateTime),
          Column("finished_at", DateTime))
    metadata.create_all(engine, checkfirst=True)


def _v2_experiments(engine: Engine) -> None:
    metadata = MetaData()
    Table("experiments", metadata,
          Column("id", Integer, primary_key=True),
          Column("name", String(200), nullable=False),
          Column("plan", JSON, nullable=False),
          Column("status", String(20), nullable=False),
          Column("total_units", Integer, nullable=False),
          Column("done_units", Integer, nullable=False),
          Column("error", Text),
          Column("created_at", DateTime, nullable=False),
          Column("finished_at", DateTime))
    metadata.create_all(engine, checkfirst=True)
    columns = {c["name"] for c in inspect(engine).get_columns("runs")}
    with engine.begin() as conn:
        if "experiment_id" not in columns:
            conn.execute(text("ALTER TABLE runs ADD COLUMN experiment_id INTEGER "
                              "REFERENCES experiments(id) ON DELETE CASCADE"))
        if "config_key" not in columns:
            conn.execute(text("ALTER TABLE runs ADD COLUMN config_key VARCHAR(300)"))
        for index in ("uq_runs_experiment_config ON runs (experiment_id, config_key)",
                      "uq_items_run_source ON items (run_id, source_id)",
                      "uq_outputs_condition_seed ON outputs (condition_id, seed)"):
            conn.execute(text(f"CREATE UNIQUE INDEX IF NOT EXISTS {index}"))


def _v3_tags(engine: Engine) -> None:
    metadata = MetaData()
    _runs_stub(metadata)
    tags = Table("tags", metadata,
                 Column("id", Integer, primary_key=True),
                 Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
                 Column("name", String(60), nullable=False, index=True),
                 Column("created_at", DateTime, nullable=False),
                 UniqueConstraint("run_id", "name", name="uq_tags_run_name"))
    metadata.create_all(engine, tables=[tags], checkfirst=True)


def _v4_review(engine: Engine) -> None:
    metadata = MetaData()
    Table("review_tasks", metadata,
          Column("id", Integer, primary_key=True),
          Column("name", String(200), nullable=False),
          Column("created_at", DateTime, nullable=False),
          Column("experiment_ids", JSON, nullable=False),
          Column("pair", String(80), nullable=False),
          Column("n_items", Integer, nullable=False),
          Column("annotators_per_item", Integer, nullable=False),
          Column("seed", Integer, nullable=False))
    Table("review_items", metadata,
          Column("id", Integer, primary_key=True),
          Column("task_id", Integer, ForeignKey("review_tasks.id", ondelete="CASCADE"), nullable=False, index=True),
          Column("position", Integer, nullable=False),
          Column("context", Text, nullable=False),
          Column("context_label", String(80), nullable=False),
          Column("first_text", Text, nullable=False),
          Column("second_text", Text, nullable=False),
          Column("hidden", JSON, nullable=False))
    Table("review_labels", metadata,
          Column("id", Integer, primary_key=True),
          Column("item_id", Integer, ForeignKey("review_items.id", ondelete="CASCADE"), nullable=False, index=True),
          Column("annotator", String(80), nullable=False),
          Column("preference", String(20), nullable=False),
          Column("faithfulness_first", Integer, nullable=False),
          Column("faithfulness_second", Integer, nullable=False),
          Column("tags", JSON, nullable=False),
          Column("comment", Text, nullable=False),
          Column("a_is_first", Boolean, nullable=False),
          Column("created_at", DateTime, nullable=False),
          Column("updated_at", DateTime, nullable=False),
          UniqueConstraint("item_id", "annotator", name="uq_review_labels_item_annotator"))
    metadata.create_all(engine, checkfirst=True)


def _v5_unblinded_review(engine: Engine) -> None:
    """review_tasks.blind: added to the model after step 4 shipped, so databases made at 4 lack it."""
    if "blind" not in {c["name"] for c in inspect(engine).get_columns("review_tasks")}:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE review_tasks ADD COLUMN blind BOOLEAN NOT NULL DEFAULT TRUE"))


def _v6_job_heartbeats(engine: Engine) -> None:
    """Which worker runs a job and when it last said so, so only jobs of a stopped worker are requeued."""
    columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
    with engine.begin() as conn:
        for name, kind in (("worker_id", String(120)), ("heartbeat_at", DateTime())):
            if name not in columns:  # the type as this database spells it (DATETIME, TIMESTAMP)
                conn.execute(text(f"ALTER TABLE jobs ADD COLUMN {name} {kind.compile(dialect=engine.dialect)}"))


def _v7_experiment_state_on_jobs(engine: Engine) -> None:
    """An experiment's status, error and progress are its latest job's (jobs.experiment_id); the copies
    the experiments table kept go, after an experiment run without a job gets one that carries them."""
    metadata = MetaData()
    experiments = Table("experiments", metadata,
                        Column("id", Integer, primary_key=True),
                        Column("status", String(20)),
                        Column("total_units", Integer),
                        Column("done_units", Integer),
                        Column("error", Text),
                        Column("created_at", DateTime),
                        Column("finished_at", DateTime))
    jobs = Table("jobs", metadata,
                 Column("id", Integer, primary_key=True),
                 Column("kind", String(40), nullable=False),
                 Column("params", JSON, nullable=False),
                 Column("status", String(20), nullable=False),
                 Column("progress", Float, nullable=False),
                 Column("message", Text, nullable=False),
                 Column("error", Text),
                 Column("created_at", DateTime, nullable=False),
                 Column("finished_at", DateTime),
                 Column("experiment_id", Integer, ForeignKey("experiments.id", ondelete="CASCADE")))
    job_columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
    experiment_columns = {c["name"] for c in inspect(engine).get_columns("experiments")}
    with engine.begin() as conn:
        if "experiment_id" not in job_columns:
            conn.execute(text("ALTER TABLE jobs ADD COLUMN experiment_id INTEGER "
                              "REFERENCES experiments(id) ON DELETE CASCADE"))
        conn.execute(text("CREATE INDEX IF NOT EXISTS ix_jobs_experiment_id ON jobs (experiment_id)"))
        if "status" not in experiment_columns:
            return
        for job_id, params in conn.execute(select(jobs.c.id, jobs.c.params).where(jobs.c.kind == "experiment")):
            if params.get("experiment_id") is not None:
                conn.execute(update(jobs).where(jobs.c.id == job_id)
                             .values(experiment_id=params["experiment_id"], params={}))
        for experiment_id, status, error, created_at, finished_at, done, total in conn.execute(select(
                experiments.c.id, experiments.c.status, experiments.c.error, experiments.c.created_at,
                experiments.c.finished_at, experiments.c.done_units, experiments.c.total_units)):
            latest = conn.execute(select(jobs.c.id, jobs.c.status).where(jobs.c.experiment_id == experiment_id)
                                  .order_by(jobs.c.id.desc()).limit(1)).first()
            if latest is None:
                conn.execute(insert(jobs).values(
                    kind="experiment", params={}, status=status, progress=done / total if total else 0.0,
                    message=f"{status.capitalize()}: {done}/{total}", error=error, created_at=created_at,
                    finished_at=finished_at, experiment_id=experiment_id))
            elif latest.status not in ("queued", "running") and latest.status != status:
                conn.execute(update(jobs).where(jobs.c.id == latest.id).values(status=status, error=error))
        for column in ("status", "done_units", "error", "finished_at"):
            conn.execute(text(f"ALTER TABLE experiments DROP COLUMN {column}"))


def _v8_output_trajectory_and_compute(engine: Engine) -> None:
    """Each output's denoising trajectory and the compute it took, and the forward passes a compressor
    that asks a model spent; older rows keep NULL."""
    added = (("outputs", "trajectory", JSON()), ("outputs", "tokens_processed", BigInteger()),
             ("outputs", "peak_memory_bytes", BigInteger()), ("conditions", "compress_forward_passes", Integer()))
    with engine.begin() as conn:
        for table, name, kind in added:
            if name not in {c["name"] for c in inspect(conn).get_columns(table)}:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind.compile(dialect=engine.dialect)}"))


def _v9_label_history(engine: Engine) -> None:
    metadata = MetaData()
    Table("review_items", metadata, Column("id", Integer, primary_key=True))
    events = Table("review_label_events", metadata,
                   Column("id", Integer, primary_key=True),
                   Column("item_id", Integer, ForeignKey("review_items.id", ondelete="CASCADE"), nullable=False,
                          index=True),
                   Column("annotator", String(80), nullable=False),
                   Column("changed_at", DateTime, nullable=False),
                   Column("old", JSON),
                   Column("new", JSON, nullable=False))
    metadata.create_all(engine, tables=[events], checkfirst=True)


def _v10_accounts_and_assignments(engine: Engine) -> None:
    metadata = MetaData()
    Table("review_items", metadata, Column("id", Integer, primary_key=True))
    assignments = Table(
        "review_assignments", metadata,
        Column("id", Integer, primary_key=True),
        Column("item_id", Integer, ForeignKey("review_items.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("annotator", String(80), nullable=False, index=True),
        UniqueConstraint("item_id", "annotator", name="uq_review_assignments_item_annotator"))
    accounts = Table("accounts", metadata,
                     Column("id", Integer, primary_key=True),
                     Column("name", String(80), nullable=False, unique=True),
                     Column("role", String(20), nullable=False),
                     Column("password_hash", String(200)),
                     Column("active", Boolean, nullable=False),
                     Column("created_at", DateTime, nullable=False))
    invites = Table("invites", metadata,
                    Column("id", Integer, primary_key=True),
                    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False,
                           index=True),
                    Column("token_hash", String(64), nullable=False, unique=True),
                    Column("created_at", DateTime, nullable=False),
                    Column("expires_at", DateTime, nullable=False),
                    Column("revoked_at", DateTime),
                    Column("last_used_at", DateTime))
    metadata.create_all(engine, tables=[assignments, accounts, invites], checkfirst=True)


# (version, name, step), applied in order, each once (db.session.migrate records them).
MIGRATIONS: list[tuple[int, str, Callable[[Engine], None]]] = [
    (1, "runs, items, conditions, outputs, metrics, jobs", _v1_results),
    (2, "experiments; unique run config, item and output keys", _v2_experiments),
    (3, "tags on runs", _v3_tags),
    (4, "review tasks, items and annotators' labels", _v4_review),
    (5, "review tasks may be unblinded", _v5_unblinded_review),
    (6, "job heartbeats", _v6_job_heartbeats),
    (7, "an experiment's status lives on its jobs", _v7_experiment_state_on_jobs),
    (8, "output trajectories and compute; compressors' forward passes", _v8_output_trajectory_and_compute),
    (9, "append-only label history", _v9_label_history),
    (10, "accounts, invites and review assignments", _v10_accounts_and_assignments),
]
