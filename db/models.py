"""The schema: run -> item -> condition -> output -> metric, plus tags on runs, the job queue and review tasks.

A run holds everything needed to reproduce it (model id, local path and revision, sampler
parameters, seed, compressor and its parameters, library versions); conditions are rows, so
grids, baselines and charts are queries.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SchemaMigration(Base):
    __tablename__ = "schema_migrations"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    applied_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Experiment(Base):
    """A study: a plan expanded into runs, executed incrementally and resumable.

    Its status, error and progress are those of its latest job (``db.queries.experiment_states``)."""

    __tablename__ = "experiments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    plan: Mapped[dict] = mapped_column(JSON)
    total_units: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    runs: Mapped[list["Run"]] = relationship(back_populates="experiment", cascade="all, delete-orphan",
                                             order_by="Run.id")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("uq_runs_experiment_config", "experiment_id", "config_key", unique=True),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    config_key: Mapped[str | None] = mapped_column(String(300))  # model|compressor|ratio|seed within an experiment
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(40), default="compare")
    model_id: Mapped[str] = mapped_column(String(500))
    model_path: Mapped[str] = mapped_column(Text)
    model_revision: Mapped[str | None] = mapped_column(String(100))
    model_kind: Mapped[str] = mapped_column(String(40))
    model_parameters: Mapped[int] = mapped_column(Integer)
    model_notes: Mapped[list] = mapped_column(JSON, default=list)
    device: Mapped[str] = mapped_column(String(40))
    dtype: Mapped[str] = mapped_column(String(40))
    preset: Mapped[str] = mapped_column(String(40))
    sampler_params: Mapped[dict] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    compressor: Mapped[str] = mapped_column(String(80), index=True)
    compressor_params: Mapped[dict] = mapped_column(JSON)
    ratio_requested: Mapped[float] = mapped_column(Float)
    bertscore_backbone: Mapped[str] = mapped_column(String(200))
    versions: Mapped[dict] = mapped_column(JSON)
    timings: Mapped[dict] = mapped_column(JSON)
    experiment: Mapped[Experiment | None] = relationship(back_populates="runs")
    items: Mapped[list["Item"]] = relationship(back_populates="run", cascade="all, delete-orphan", order_by="Item.id")
    # The database's ON DELETE CASCADE removes a deleted run's tags; the ORM need not load them first.
    tags: Mapped[list["Tag"]] = relationship(back_populates="run", cascade="all, delete-orphan", passive_deletes=True,
                                             order_by="Tag.name")


class Tag(Base):
    """A user's label on a run, to find it again in History."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_tags_run_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(60), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    run: Mapped[Run] = relationship(back_populates="tags")


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (Index("uq_items_run_source", "run_id", "source_id", unique=True),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(80))
    source_id: Mapped[str | None] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(40))
    prompt: Mapped[str] = mapped_column(Text)
    gold_solution: Mapped[str | None] = mapped_column(Text)
    gold_answer: Mapped[str | None] = mapped_column(String(100))
    reference: Mapped[str | None] = mapped_column(Text)
    run: Mapped[Run] = relationship(back_populates="items")
    conditions: Mapped[list["Condition"]] = relationship(back_populates="item", cascade="all, delete-orphan",
                                                         order_by="Condition.id")


class Condition(Base):
    __tablename__ = "conditions"
    __table_args__ = (UniqueConstraint("item_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(40))  # original | compressed | reconstructed | reasoning_on_reconstructed
    prompt_text: Mapped[str] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    prompt_tokens_cl100k: Mapped[int | None] = mapped_column(Integer)
    ratio_achieved: Mapped[float] = mapped_column(Float, default=1.0)
    words: Mapped[list | None] = mapped_column(JSON)  # compressor's words: text, start, end, kept
    compress_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    compress_forward_passes: Mapped[int | None] = mapped_column(Integer)  # of the model a compressor asked
    item: Mapped[Item] = relationship(back_populates="conditions")
    outputs: Mapped[list["Output"]] = relationship(back_populates="condition", cascade="all, delete-orphan",
                                                   order_by="Output.id")


class Output(Base):
    __tablename__ = "outputs"
    __table_args__ = (Index("uq_outputs_condition_seed", "condition_id", "seed", unique=True),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    condition_id: Mapped[int] = mapped_column(ForeignKey("conditions.id", ondelete="CASCADE"), index=True)
    seed: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    token_ids: Mapped[list] = mapped_column(JSON)
    extracted_answer: Mapped[str | None] = mapped_column(String(100))
    seconds: Mapped[float] = mapped_column(Float)
    forward_calls: Mapped[int] = mapped_column(Integer)
    # {"step": [...], "prob": [...]}, one entry per token id: the step that committed it and its probability then.
    trajectory: Mapped[dict | None] = mapped_column(JSON)
    tokens_processed: Mapped[int | None] = mapped_column(BigInteger)  # real positions computed, all passes
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)  # GPU only
    condition: Mapped[Condition] = relationship(back_populates="outputs")
    metrics: Mapped[list["Metric"]] = relationship(back_populates="output", cascade="all, delete-orphan",
                                                   order_by="Metric.id")


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("output_id", "name", "reference"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(40))  # exact_match | bleu | rouge1 | ... | bertscore_f1
    reference: Mapped[str] = mapped_column(String(40))  # original_output | gold | reference_summary
    value: Mapped[float] = mapped_column(Float)
    output: Mapped[Output] = relationship(back_populates="metrics")


class Job(Base):
    """Work queued for the worker; pages and the CLI submit jobs and read their progress."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)  # queued|running|done|failed|cancelled
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    worker_id: Mapped[str | None] = mapped_column(String(120))  # host:pid:random of the worker running it
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)  # refreshed while it runs


class ReviewTask(Base):
    """Pairs of stored texts sampled for annotators to judge blind (see core.evaluation.review)."""

    __tablename__ = "review_tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    experiment_ids: Mapped[list] = mapped_column(JSON)
    pair: Mapped[str] = mapped_column(String(80))  # a key of core.evaluation.review.PAIRS
    n_items: Mapped[int] = mapped_column(Integer)  # asked for; the task may hold fewer when candidates ran out
    annotators_per_item: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    blind: Mapped[bool] = mapped_column(Boolean, default=True)  # hide what each text is until the label is in
    items: Mapped[list["ReviewItem"]] = relationship(back_populates="task", cascade="all, delete-orphan",
                                                     passive_deletes=True, order_by="ReviewItem.position")


class ReviewItem(Base):
    """Two texts and what they are judged against, copied from the runs so a review outlives them."""

    __tablename__ = "review_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("review_tasks.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # order in the annotators' queue
    context: Mapped[str] = mapped_column(Text)
    context_label: Mapped[str] = mapped_column(String(80))
    first_text: Mapped[str] = mapped_column(Text)  # the baseline side, e.g. the original output
    second_text: Mapped[str] = mapped_column(Text)
    hidden: Mapped[dict] = mapped_column(JSON)  # conditions, compressor, ratio, metrics: shown only after a label
    task: Mapped[ReviewTask] = relationship(back_populates="items")
    labels: Mapped[list["ReviewLabel"]] = relationship(back_populates="item", cascade="all, delete-orphan",
                                                       passive_deletes=True, order_by="ReviewLabel.id")
    assignments: Mapped[list["ReviewAssignment"]] = relationship(cascade="all, delete-orphan", passive_deletes=True,
                                                                 order_by="ReviewAssignment.id")


class ReviewLabel(Base):
    """One annotator's judgement of one item, in canonical terms (first/second), never in the A/B they saw."""

    __tablename__ = "review_labels"
    __table_args__ = (UniqueConstraint("item_id", "annotator", name="uq_review_labels_item_annotator"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), index=True)
    annotator: Mapped[str] = mapped_column(String(80))
    preference: Mapped[str] = mapped_column(String(20))  # first | second | tie | both_bad
    faithfulness_first: Mapped[int] = mapped_column(Integer)  # 1-5
    faithfulness_second: Mapped[int] = mapped_column(Integer)
    tags: Mapped[list] = mapped_column(JSON, default=list)  # keys of core.evaluation.review.ERROR_TAGS
    comment: Mapped[str] = mapped_column(Text, default="")
    a_is_first: Mapped[bool] = mapped_column(Boolean)  # the order the annotator saw, for audit
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    item: Mapped[ReviewItem] = relationship(back_populates="labels")


class ReviewLabelEvent(Base):
    """Append-only history of labels: every save, with what it replaced (null for the first) and what it wrote."""

    __tablename__ = "review_label_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), index=True)
    annotator: Mapped[str] = mapped_column(String(80))
    changed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    old: Mapped[dict | None] = mapped_column(JSON)
    new: Mapped[dict] = mapped_column(JSON)


class ReviewAssignment(Base):
    """An item of a task given to one annotator: a task with assignments shows each annotator only theirs."""

    __tablename__ = "review_assignments"
    __table_args__ = (UniqueConstraint("item_id", "annotator", name="uq_review_assignments_item_annotator"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), index=True)
    annotator: Mapped[str] = mapped_column(String(80), index=True)


class Account(Base):
    """Someone who signs in when authentication is on (see core.accounts): a reviewer or an annotator."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)  # an annotator's labels are kept under it
    role: Mapped[str] = mapped_column(String(20))  # reviewer | annotator
    password_hash: Mapped[str | None] = mapped_column(String(200))  # Argon2id; null: signs in by invite only
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # false: every session of it ends at its next click
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Invite(Base):
    """A personal sign-in link: only the SHA-256 of its random token is kept, so the database cannot sign anyone in."""

    __tablename__ = "invites"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
