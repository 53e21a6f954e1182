"""Reads that pages, the CLI and tests share: a stored run as one plain dict, and run listings."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Condition, Item, Run


def run_view(session: Session, run_id: int) -> dict:
    run = session.get(Run, run_id)
    if run is None:
        raise KeyError(run_id)
    item = run.items[0]
    by_name = {c.name: c for c in item.conditions}
    original, compressed = by_name["original"], by_name["compressed"]
    out_o, out_c = original.outputs[0], compressed.outputs[0]

    def metric_table(output) -> dict[str, dict[str, float]]:
        table: dict[str, dict[str, float]] = {}
        for m in output.metrics:
            table.setdefault(m.reference, {})[m.name] = m.value
        return table

    return {
        "run_id": run.id,
        "created_at": run.created_at.isoformat(timespec="seconds"),
        "model": {"id": run.model_id, "path": run.model_path, "revision": run.model_revision, "kind": run.model_kind,
                  "parameters": run.model_parameters, "notes": run.model_notes, "device": run.device,
                  "dtype": run.dtype},
        "preset": run.preset,
        "sampler": run.sampler_params,
        "seed": run.seed,
        "compressor": run.compressor,
        "compressor_params": run.compressor_params,
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
        "metrics": {"original": metric_table(out_o), "compressed": metric_table(out_c)},
    }


def gold_verdicts(run: Run) -> dict[str, float]:
    """Exact match against the gold answer by condition, for the run's (single) prompt."""
    return {c.name: m.value for item in run.items for c in item.conditions for o in c.outputs
            for m in o.metrics if m.name == "exact_match" and m.reference == "gold"}


def run_summaries(session: Session, compressor: str | None = None, model: str | None = None,
                  task: str | None = None, since=None, until=None, flipped: bool = False,
                  limit: int = 500) -> list[dict]:
    """One row per Playground run, newest first, for the history table (experiments have the Results page).

    ``flipped`` keeps the runs whose answer was right on one prompt and wrong on the other.
    """
    query = (select(Run, Item, Condition)
             .join(Item, Item.run_id == Run.id)
             .join(Condition, (Condition.item_id == Item.id) & (Condition.name == "compressed"))
             .where(Run.kind == "compare")
             .order_by(Run.id.desc()).limit(limit))
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
            "preset": run.preset, "seed": run.seed, "flipped": flip, "prompt": item.prompt[:80],
        })
    return rows


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
