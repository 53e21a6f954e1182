"""Reads that pages, the CLI and tests share: a stored run as one plain dict, run listings and their tags,
experiments' outputs and states."""

from __future__ import annotations

import re
from dataclasses import fields

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from core.errors import UserError
from core.llada.sampler import SamplerParams
from db.models import Condition, Experiment, Item, Job, Output, Run, Tag

# An experiment keeps its original prompts' outputs in a baseline run of their own, one per model and
# seed, whose compressor is this; every compressed run of the same model and seed compares against it.
NO_COMPRESSION = "none"
# The read model behind analysis, review and export: one row per output of an experiment, these
# columns, then one column per metric named "metric@reference".
OUTPUT_COLUMNS = ("experiment_id", "run_id", "model", "compressor", "ratio", "seed", "source", "source_id", "task",
                  "condition", "ratio_achieved", "prompt_tokens", "item_prompt", "prompt", "output",
                  "extracted_answer", "gold_answer", "sampler", "forward_passes", "tokens_processed",
                  "peak_memory_bytes", "seconds", "trajectory")


def baseline_runs(experiment_id: int, model_id: str, seed: int) -> tuple:
    """Where clauses that select the baseline run of a model and seed in an experiment."""
    return (Run.experiment_id == experiment_id, Run.compressor == NO_COMPRESSION, Run.model_id == model_id,
            Run.seed == seed)


def experiment_run_id(session: Session, experiment_id: int, config_key: str) -> int | None:
    """The stored run of one run spec of an experiment, if it has started."""
    return session.scalar(select(Run.id).where(Run.experiment_id == experiment_id, Run.config_key == config_key))


def condition_texts(session: Session, run_id: int, condition: str) -> dict[str, str]:
    """Output texts of one condition of a run, by item source id: what a resumed run already has."""
    rows = session.execute(select(Item.source_id, Output.text)
                           .join(Condition, Condition.item_id == Item.id)
                           .join(Output, Output.condition_id == Condition.id)
                           .where(Item.run_id == run_id, Condition.name == condition))
    return dict(rows.all())


def experiment_states(session: Session, experiment_ids) -> dict[int, dict]:
    """Status, error, message and progress of each experiment: its latest job's. An experiment run
    without a job (a library call) is "done" once every unit is stored, else "not started" or "incomplete"."""
    ids = list(experiment_ids)
    latest = (select(Job.experiment_id, func.max(Job.id).label("job_id"))
              .where(Job.experiment_id.in_(ids)).group_by(Job.experiment_id).subquery())
    jobs = {job.experiment_id: job for job in session.scalars(select(Job).join(latest, latest.c.job_id == Job.id))}
    done = dict(session.execute(
        select(Run.experiment_id, func.count(Output.id))
        .join(Item, Item.run_id == Run.id).join(Condition, Condition.item_id == Item.id)
        .join(Output, Output.condition_id == Condition.id)
        .where(Run.experiment_id.in_(ids)).group_by(Run.experiment_id)).all())
    states = {}
    for experiment in session.scalars(select(Experiment).where(Experiment.id.in_(ids))):
        stored, job = done.get(experiment.id, 0), jobs.get(experiment.id)
        if job is not None:
            status = job.status
        else:
            status = "done" if stored >= experiment.total_units else "incomplete" if stored else "not started"
        states[experiment.id] = {"status": status, "done": stored, "total": experiment.total_units,
                                 "error": job.error if job else None, "message": job.message if job else "",
                                 "job_id": job.id if job else None, "finished_at": job.finished_at if job else None}
    return states


def sampler_label(stored: dict) -> str:
    """Reference, fast exact, or the approximations on, of stored sampler parameters (older rows lack
    the fast modes' keys: they ran the reference loop)."""
    known = {f.name for f in fields(SamplerParams)}
    return SamplerParams(**{k: v for k, v in stored.items() if k in known}).label()


def is_baseline_row(row: dict) -> bool:
    return row["compressor"] == NO_COMPRESSION and row["condition"] == "original"


def baseline_row_key(row: dict) -> tuple:
    """What an output row shares with its baseline row: experiment, model, seed and prompt."""
    return row["experiment_id"], row["model"], row["seed"], row["source_id"]


def output_rows(session: Session, experiment_id: int) -> list[dict]:
    """The experiment's outputs as OUTPUT_COLUMNS rows plus their metrics, in run, item, condition order."""
    if session.get(Experiment, experiment_id) is None:
        raise UserError(f"No experiment #{experiment_id}")
    query = (select(Run, Item, Condition, Output)
             .join(Item, Item.run_id == Run.id)
             .join(Condition, Condition.item_id == Item.id)
             .join(Output, Output.condition_id == Condition.id)
             .where(Run.experiment_id == experiment_id)
             .order_by(Run.id, Item.id, Condition.id)
             .options(selectinload(Output.metrics)))
    rows = []
    for run, item, condition, output in session.execute(query):
        values = (experiment_id, run.id, run.model_id, run.compressor, run.ratio_requested, output.seed, item.source,
                  item.source_id, item.task, condition.name, condition.ratio_achieved, condition.prompt_tokens,
                  item.prompt, condition.prompt_text, output.text, output.extracted_answer, item.gold_answer,
                  sampler_label(run.sampler_params.get(item.task, run.sampler_params)), output.forward_calls,
                  output.tokens_processed, output.peak_memory_bytes, output.seconds, output.trajectory)
        row = dict(zip(OUTPUT_COLUMNS, values))
        row.update({f"{m.name}@{m.reference}": m.value for m in output.metrics})
        rows.append(row)
    return rows

# History's "Sort by" choices; ties fall back to newest first so the order is stable.
RUN_SORTS = {
    "newest first": (Run.id.desc(),),
    "oldest first": (Run.id.asc(),),
    "ratio asked, lowest first": (Run.ratio_requested.asc(), Run.id.desc()),
    "ratio asked, highest first": (Run.ratio_requested.desc(), Run.id.desc()),
    "ratio achieved, highest first": (Condition.ratio_achieved.desc(), Run.id.desc()),
    "compressor": (Run.compressor.asc(), Run.id.desc()),
    "model": (Run.model_id.asc(), Run.id.desc()),
    "task": (Item.task.asc(), Run.id.desc()),
}
TAG_MAX_CHARS = 60


def run_view(session: Session, run_id: int) -> dict:
    """A Playground run: its one prompt, original and compressed, and the reconstructions it ran."""
    run = session.get(Run, run_id)
    if run is None:
        raise KeyError(run_id)
    item = run.items[0]
    by_name = {c.name: c for c in item.conditions}
    extra = [c for c in item.conditions if c.name not in ("original", "compressed")]
    return _side_by_side(run, item, by_name["original"], by_name["compressed"], extra)


def item_view(session: Session, run_id: int, source_id: str) -> dict:
    """One prompt of an experiment's compressed run, beside the same prompt in the run's baseline.

    The original condition is in the experiment's baseline run (``baseline_runs``), so the two
    halves of the view come from two runs. Raises KeyError when either is missing.
    """
    run = session.get(Run, run_id)
    item = None if run is None else session.scalar(
        select(Item).where(Item.run_id == run_id, Item.source_id == source_id))
    if item is None:
        raise KeyError((run_id, source_id))
    baseline = session.scalar(
        select(Condition).join(Item, Item.id == Condition.item_id).join(Run, Run.id == Item.run_id)
        .where(*baseline_runs(run.experiment_id, run.model_id, run.seed), Item.source_id == source_id,
               Condition.name == "original"))
    by_name = {c.name: c for c in item.conditions}
    if baseline is None or "compressed" not in by_name:
        raise KeyError((run_id, source_id))
    extra = [c for c in item.conditions if c.name != "compressed"]
    return _side_by_side(run, item, baseline, by_name["compressed"], extra)


def _metric_table(output) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for m in output.metrics:
        table.setdefault(m.reference, {})[m.name] = m.value
    return table


def _side_by_side(run: Run, item: Item, original: Condition, compressed: Condition, extra: list[Condition]) -> dict:
    out_o, out_c = original.outputs[0], compressed.outputs[0]
    sampler = run.sampler_params
    if run.kind == "experiment":  # experiment runs keep one parameter set per task
        sampler = sampler.get(item.task, sampler)
    return {
        "run_id": run.id,
        "experiment_id": run.experiment_id,
        "created_at": run.created_at.isoformat(timespec="seconds"),
        "model": {"id": run.model_id, "path": run.model_path, "revision": run.model_revision, "kind": run.model_kind,
                  "parameters": run.model_parameters, "notes": run.model_notes, "device": run.device,
                  "dtype": run.dtype},
        "preset": run.preset,
        "sampler": sampler,
        "seed": run.seed,
        "compressor": run.compressor,
        "compressor_params": run.compressor_params,
        "compress_forward_passes": compressed.compress_forward_passes,
        "ratio_requested": run.ratio_requested,
        "ratio_achieved": compressed.ratio_achieved,
        "bertscore_backbone": run.bertscore_backbone,
        "versions": run.versions,
        "timings": run.timings,
        "task": item.task,
        "source": item.source,
        "source_id": item.source_id,
        "gold_answer": item.gold_answer,
        "reference": item.reference,
        "original_prompt": original.prompt_text,
        "compressed_prompt": compressed.prompt_text,
        "words": compressed.words or [],
        "kept_words": [w["kept"] for w in compressed.words or []],
        "prompt_tokens": {"original": original.prompt_tokens, "compressed": compressed.prompt_tokens},
        "prompt_tokens_cl100k": {"original": original.prompt_tokens_cl100k,
                                 "compressed": compressed.prompt_tokens_cl100k},
        "original_output": out_o.text,
        "compressed_output": out_c.text,
        "extracted_answers": {"original": out_o.extracted_answer, "compressed": out_c.extracted_answer},
        "output_token_ids": {"original": out_o.token_ids, "compressed": out_c.token_ids},
        "trajectories": {"original": out_o.trajectory, "compressed": out_c.trajectory},
        "compute": {name: {"prompt_tokens": c.prompt_tokens, "forward_passes": o.forward_calls,
                           "tokens_processed": o.tokens_processed, "peak_memory_bytes": o.peak_memory_bytes,
                           "seconds": o.seconds}
                    for name, c, o in (("original", original, out_o), ("compressed", compressed, out_c))},
        "metrics": {"original": _metric_table(out_o), "compressed": _metric_table(out_c)},
        "other_conditions": [{"name": c.name, "prompt": c.prompt_text, "output": c.outputs[0].text,
                              "extracted_answer": c.outputs[0].extracted_answer,
                              "metrics": _metric_table(c.outputs[0])} for c in extra if c.outputs],
    }


def gold_verdicts(run: Run) -> dict[str, float]:
    """Exact match against the gold answer by condition, for the run's (single) prompt."""
    return {c.name: m.value for item in run.items for c in item.conditions for o in c.outputs
            for m in o.metrics if m.name == "exact_match" and m.reference == "gold"}


def run_summaries(session: Session, compressor: str | None = None, model: str | None = None,
                  task: str | None = None, since=None, until=None, flipped: bool = False,
                  ratio: float | None = None, tag: str | None = None, sort: str = "newest first",
                  limit: int = 500) -> list[dict]:
    """One row per Playground run, in ``sort`` order (a key of RUN_SORTS), for the history table
    (experiments have the Results page). The order is applied before ``limit``, so it covers every run.

    ``flipped`` keeps the runs whose answer was right on one prompt and wrong on the other;
    ``ratio`` is the ratio asked for; ``tag`` keeps the runs carrying that tag.
    """
    if sort not in RUN_SORTS:
        raise UserError(f"Unknown sort {sort!r}: choose one of {', '.join(RUN_SORTS)}")
    query = (select(Run, Item, Condition)
             .join(Item, Item.run_id == Run.id)
             .join(Condition, (Condition.item_id == Item.id) & (Condition.name == "compressed"))
             .where(Run.kind == "compare")
             .options(selectinload(Run.tags))
             .order_by(*RUN_SORTS[sort]).limit(limit))
    if since is not None:
        query = query.where(Run.created_at >= since)
    if until is not None:
        query = query.where(Run.created_at < until)
    if compressor:
        query = query.where(Run.compressor == compressor)
    if model:
        query = query.where(Run.model_id == model)
    if task:
        query = query.where(Item.task == task)
    if ratio is not None:
        query = query.where(Run.ratio_requested == ratio)
    if tag:
        query = query.where(Run.id.in_(select(Tag.run_id).where(Tag.name == tag)))
    rows = []
    for run, item, condition in session.execute(query):
        verdicts = gold_verdicts(run)
        flip = len(verdicts) == 2 and verdicts["original"] != verdicts["compressed"]
        if flipped and not flip:
            continue
        rows.append({
            "run": run.id, "created": run.created_at.isoformat(sep=" ", timespec="seconds"), "model": run.model_id,
            "compressor": run.compressor, "ratio asked": run.ratio_requested,
            "ratio achieved": round(condition.ratio_achieved, 2), "task": item.task, "source": item.source,
            "preset": run.preset, "seed": run.seed, "flipped": flip, "tags": [t.name for t in run.tags],
            "prompt": item.prompt[:80],
        })
    return rows


def normalise_tags(names) -> list[str]:
    """Tags as stored: trimmed, inner whitespace collapsed to one space, empties and repeats dropped, sorted."""
    tags = {re.sub(r"\s+", " ", str(name)).strip() for name in names}
    tags.discard("")
    too_long = sorted(t for t in tags if len(t) > TAG_MAX_CHARS)
    if too_long:
        raise UserError(f"A tag has at most {TAG_MAX_CHARS} characters; one has {len(too_long[0])}, "
                        f"starting {too_long[0][:20]!r}.")
    return sorted(tags)


def set_tags(session: Session, run_id: int, names) -> list[str]:
    """Make a run's tags exactly ``names`` (normalised); tags already there keep their creation time."""
    run = session.get(Run, run_id)
    if run is None:
        raise UserError(f"No run #{run_id}: it may have been deleted.")
    wanted = normalise_tags(names)
    for tag in [t for t in run.tags if t.name not in wanted]:
        run.tags.remove(tag)
    present = {t.name for t in run.tags}
    run.tags.extend(Tag(name=name) for name in wanted if name not in present)
    session.flush()
    return wanted


def distinct_tags(session: Session) -> list[str]:
    """Every tag on a Playground run, the runs History lists."""
    query = select(Tag.name).join(Run, Run.id == Tag.run_id).where(Run.kind == "compare").distinct()
    return sorted(session.scalars(query))


def delete_run(session: Session, run_id: int) -> bool:
    """Delete one run with its items, conditions, outputs and metrics; jobs keep their row, unlinked."""
    run = session.get(Run, run_id)
    if run is None:
        return False
    session.delete(run)
    return True


def run_count(session: Session) -> int:
    return session.scalar(select(func.count(Run.id))) or 0


def distinct_values(session: Session, column) -> list[str]:
    """The values of a run or item column among Playground runs, the ones History lists."""
    query = (select(column).select_from(Run).join(Item, Item.run_id == Run.id)
             .where(Run.kind == "compare").distinct())
    return sorted(v for v in session.scalars(query) if v is not None)
