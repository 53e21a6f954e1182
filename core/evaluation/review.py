"""Qualitative review: annotators judge pairs of stored texts blind, and a reviewer reads their agreement.

A task samples prompts of stored experiments and copies, for each, two texts of one pair of
conditions (say the original output and the compressed-prompt output) with what they are judged
against. Annotators see the texts as A and B in an order fixed per item and annotator; the
condition, compressor, ratio and metrics stay in ``ReviewItem.hidden`` until they have answered.
Labels are stored in canonical terms (``first`` = the baseline side), one per annotator and item.
A task that names its annotators gives each item to exactly ``annotators_per_item`` of them (balanced,
seeded), and an annotator sees, labels and unblinds only their own items; a task that names none is
open to anyone who gives a name, as on a one-person install.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import random
from collections import Counter
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.data.datasets import RECONSTRUCT_INSTRUCTION
from core.render import csv_text
from core.errors import UserError
from core.evaluation.stats import cohen_kappa, krippendorff_alpha, normalized_entropy, spearman
from db.models import ReviewAssignment, ReviewItem, ReviewLabel, ReviewLabelEvent, ReviewTask, utcnow
from db.queries import NO_COMPRESSION, baseline_row_key, is_baseline_row, output_rows
from db.session import session_scope


@dataclass(frozen=True)
class Pair:
    """Two texts of one stored prompt to compare, and what an annotator judges them against."""

    label: str
    first_name: str  # the baseline side
    second_name: str
    first_condition: str
    second_condition: str
    compares_prompts: bool  # first side is the original prompt and the context the compressed one
    similarity: str  # the stored metric of the second text against the first

    @property
    def needs(self) -> tuple[str, ...]:
        """The stored conditions whose outputs the pair reads."""
        return (self.second_condition,) if self.compares_prompts else (self.first_condition, self.second_condition)


PAIRS: dict[str, Pair] = {
    "output_original_vs_compressed": Pair(
        "Outputs: original prompt vs compressed prompt", "original output", "compressed output",
        "original", "compressed", False, "bertscore_f1@original_output"),
    "prompt_original_vs_reconstructed": Pair(
        "Prompts: original vs reconstructed from the compressed one", "original prompt", "reconstructed prompt",
        "original", "reconstructed", True, "bertscore_f1@original_prompt"),
    "output_original_vs_reasoning_on_reconstructed": Pair(
        "Outputs: original prompt vs reconstructed prompt", "original output", "output on the reconstructed prompt",
        "original", "reasoning_on_reconstructed", False, "bertscore_f1@original_output"),
}
ERROR_TAGS: dict[str, str] = {
    "omitted_information": "Omitted information",
    "wrong_number": "Wrong number",
    "hallucinated_content": "Hallucinated content",
    "reasoning_broken": "Reasoning broken",
    "format_or_truncation": "Format or truncation",
    "other": "Other",
}
PREFERENCES = ("A", "B", "tie", "both_bad")
CANONICAL_PREFERENCES = ("first", "second", "tie", "both_bad")
FAITHFULNESS = range(1, 6)
ANNOTATOR_MAX_CHARS = 80
EXPORT_FORMATS = ("csv", "jsonl")
# The label's own fields in labels_frame; every other column describes the item.
LABEL_FIELDS = ("annotator", "preference", "faithfulness_first", "faithfulness_second", "tags", "comment",
                "a_is_first", "created_at", "updated_at")
FRAME_COLUMNS = ("task_id", "pair", "item_id", "position", *LABEL_FIELDS, "experiment_id", "run_id", "source_id",
                 "task", "model", "compressor", "ratio", "ratio_achieved", "first_condition", "second_condition",
                 "gold_answer", "context_label", "context", "first_text", "second_text")
EXACT_MATCH = "exact_match@gold"


@dataclass(frozen=True)
class QueueEntry:
    item_id: int
    position: int
    done: bool  # this annotator has labelled it


# Building a task


def _context(pair: Pair, row: dict) -> tuple[str, str]:
    """What both texts are judged against, with its label; a math prompt carries its gold answer."""
    if pair.compares_prompts:
        return "Compressed prompt", row["prompt"].removeprefix(f"{RECONSTRUCT_INSTRUCTION}\n\n")
    if row["task"] == "math" and row["gold_answer"]:
        return "Prompt and gold answer", f"{row['item_prompt']}\n\nGold answer: {row['gold_answer']}"
    return "Prompt", row["item_prompt"]


def _metrics(side: str, row: dict | None) -> dict:
    return {} if row is None else {f"{side}_{key}": value for key, value in row.items() if "@" in key}


def _hidden(pair: Pair, first: dict | None, second: dict, compressed: dict | None) -> dict:
    """Everything that would tell the annotator which text is which, kept until they have answered."""
    return {
        "experiment_id": second["experiment_id"], "run_id": second["run_id"], "source": second["source"],
        "source_id": second["source_id"], "task": second["task"], "model": second["model"], "seed": second["seed"],
        "compressor": second["compressor"], "ratio": second["ratio"],
        "ratio_achieved": compressed["ratio_achieved"] if compressed else None,
        "first_condition": pair.first_condition, "second_condition": pair.second_condition,
        "gold_answer": second["gold_answer"],
        "first_answer": first["extracted_answer"] if first else None, "second_answer": second["extracted_answer"],
    } | _metrics("first", first) | _metrics("second", second)


def _missing_conditions(rows: list[dict], pair: Pair, experiment_ids: list[int]) -> None:
    present = {row["condition"] for row in rows}
    missing = [c for c in pair.needs if c not in present]
    if missing:
        raise UserError(f"Experiment(s) {', '.join(f'#{i}' for i in experiment_ids)} have no "
                        f"{' or '.join(repr(c) for c in missing)} outputs, which the pair {pair.label!r} needs. "
                        "Choose another pair, or experiments that ran those conditions.")


def _candidates(db_url: str, experiment_ids: list[int], pair: Pair) -> list[dict]:
    """Every prompt of the experiments' compressed runs that has both texts of the pair, as ReviewItem fields."""
    with session_scope(db_url) as session:
        rows = [row for experiment_id in experiment_ids for row in output_rows(session, experiment_id)]
    _missing_conditions(rows, pair, experiment_ids)
    baselines = {baseline_row_key(r): r for r in rows if is_baseline_row(r)}
    prompts: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        if row["compressor"] != NO_COMPRESSION:
            prompts.setdefault((row["run_id"], row["source_id"]), {})[row["condition"]] = row
    candidates = []
    for conditions in prompts.values():
        second = conditions.get(pair.second_condition)
        if second is None:
            continue
        first = None if pair.compares_prompts else baselines.get(baseline_row_key(second))
        if first is None and not pair.compares_prompts:
            continue
        context_label, context = _context(pair, second)
        candidates.append({"context_label": context_label, "context": context,
                           "first_text": second["item_prompt"] if pair.compares_prompts else first["output"],
                           "second_text": second["output"],
                           "hidden": _hidden(pair, first, second, conditions.get("compressed"))})
    return candidates


def _whole(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserError(f"{what} must be a whole number of at least {minimum}; got {value!r}")
    return int(value)


def assign(n_items: int, annotators: list[str], per_item: int, seed: int) -> list[list[str]]:
    """Who labels each item: ``per_item`` different annotators per item, and every annotator within one item of
    the same load. The annotators, in an order shuffled by the seed, are dealt round the items in turn."""
    if per_item > len(annotators):
        raise UserError(f"Each item asks for {per_item} annotators but the task names {len(annotators)}: "
                        "name more annotators or ask for fewer per item")
    order = sorted(annotators)
    random.Random(seed).shuffle(order)
    return [[order[(position * per_item + j) % len(order)] for j in range(per_item)] for position in range(n_items)]


def create_task(db_url: str, name: str, experiment_ids, pair: str, n_items: int, annotators_per_item: int,
                seed: int, blind: bool = True, annotators=None) -> int:
    """A review task of ``n_items`` prompts sampled with ``seed`` (all of them when there are fewer).

    ``blind=False`` shows annotators what each text is from the start, for open qualitative reading.
    ``annotators`` (names) assigns each item to ``annotators_per_item`` of them; without, the task is open."""
    ids = sorted({int(i) for i in experiment_ids or ()})
    if not ids:
        raise UserError("Choose at least one experiment to review")
    if pair not in PAIRS:
        raise UserError(f"Unknown pair {pair!r}: choose one of {', '.join(PAIRS)}")
    n_items = _whole(n_items, "The number of items", 1)
    annotators_per_item = _whole(annotators_per_item, "The number of annotators per item", 1)
    seed = _whole(seed, "The seed", 0)
    named = sorted({_annotator(a) for a in annotators or ()})
    name = (name or "").strip() or f"{PAIRS[pair].label}, experiment(s) {', '.join(map(str, ids))}"
    if len(name) > 200:
        raise UserError(f"A task name has at most 200 characters; this one has {len(name)}")
    candidates = _candidates(db_url, ids, PAIRS[pair])
    if not candidates:
        raise UserError(f"No prompt of experiment(s) {', '.join(f'#{i}' for i in ids)} has both the "
                        f"{PAIRS[pair].first_name} and the {PAIRS[pair].second_name} yet; let the experiments finish.")
    chosen = random.Random(seed).sample(candidates, min(n_items, len(candidates)))
    with session_scope(db_url) as session:
        task = ReviewTask(name=name, experiment_ids=ids, pair=pair, n_items=n_items,
                          annotators_per_item=annotators_per_item, seed=seed, blind=bool(blind))
        task.items = [ReviewItem(position=position, **fields) for position, fields in enumerate(chosen)]
        if named:
            for item, assigned in zip(task.items, assign(len(task.items), named, annotators_per_item, seed)):
                item.assignments = [ReviewAssignment(annotator=a) for a in assigned]
        session.add(task)
        session.flush()
        return task.id


def list_tasks(db_url: str) -> list[dict]:
    """Every review task, newest first, with how many items and labels it holds."""
    with session_scope(db_url) as session:
        items = dict(session.execute(select(ReviewItem.task_id, func.count(ReviewItem.id))
                                     .group_by(ReviewItem.task_id)).all())
        labels = dict(session.execute(select(ReviewItem.task_id, func.count(ReviewLabel.id))
                                      .join(ReviewLabel, ReviewLabel.item_id == ReviewItem.id)
                                      .group_by(ReviewItem.task_id)).all())
        assigned: dict[int, set[str]] = {}
        for task_id, annotator in session.execute(
                select(ReviewItem.task_id, ReviewAssignment.annotator)
                .join(ReviewAssignment, ReviewAssignment.item_id == ReviewItem.id).distinct()):
            assigned.setdefault(task_id, set()).add(annotator)
        return [{"id": t.id, "name": t.name, "created_at": t.created_at.isoformat(sep=" ", timespec="seconds"),
                 "experiment_ids": t.experiment_ids, "pair": t.pair, "pair_label": PAIRS[t.pair].label,
                 "n_items": t.n_items, "items": items.get(t.id, 0), "annotators_per_item": t.annotators_per_item,
                 "labels": labels.get(t.id, 0), "seed": t.seed, "blind": t.blind,
                 "annotators": sorted(assigned.get(t.id, ()))}
                for t in session.scalars(select(ReviewTask).order_by(ReviewTask.id.desc()))]


def tasks_for(db_url: str, annotator: str) -> list[dict]:
    """The tasks this annotator may work on: those that assign them items, and the open ones."""
    annotator = _annotator(annotator)
    return [t for t in list_tasks(db_url) if not t["annotators"] or annotator in t["annotators"]]


def delete_task(db_url: str, task_id: int) -> bool:
    """Delete a task with its items and labels."""
    with session_scope(db_url) as session:
        task = session.get(ReviewTask, task_id)
        if task is None:
            return False
        session.delete(task)
        return True


# Annotating


def _annotator(name) -> str:
    annotator = str(name or "").strip()
    if not annotator:
        raise UserError("Enter your name first: labels are kept per annotator")
    if len(annotator) > ANNOTATOR_MAX_CHARS:
        raise UserError(f"An annotator name has at most {ANNOTATOR_MAX_CHARS} characters; this one has "
                        f"{len(annotator)}")
    return annotator


def _task(session: Session, task_id: int) -> ReviewTask:
    task = session.get(ReviewTask, task_id)
    if task is None:
        raise UserError(f"No review task #{task_id}: it may have been deleted")
    return task


def _item(session: Session, item_id: int) -> ReviewItem:
    item = session.get(ReviewItem, item_id)
    if item is None:
        raise UserError(f"No review item #{item_id}: its task may have been deleted")
    return item


def _own_label(session: Session, item_id: int, annotator: str) -> ReviewLabel | None:
    return session.scalar(select(ReviewLabel).where(ReviewLabel.item_id == item_id,
                                                    ReviewLabel.annotator == annotator))


def _assigned(session: Session, item: ReviewItem, annotator: str) -> None:
    """Refuse an annotator an item of a task with assignments that is not theirs, whatever the page sent."""
    names = set(session.scalars(select(ReviewAssignment.annotator).where(ReviewAssignment.item_id == item.id)))
    if names and annotator not in names:
        raise UserError(f"Review item #{item.id} is not in your queue")


def order_for(task_seed: int, item_id: int, annotator: str) -> bool:
    """Whether text A is the first (baseline) text for this annotator: a coin from a stable hash, so the order
    survives reloads and restarts (Python's hash() is salted per process) and differs between annotators."""
    digest = hashlib.sha256(f"{task_seed}|{item_id}|{annotator}".encode()).digest()
    return digest[0] % 2 == 0


def queue(db_url: str, task_id: int, annotator: str) -> list[QueueEntry]:
    """The items this annotator should see, in order. In a task with assignments, the items assigned to them;
    in an open one, those they labelled (to revise them) and those that still lack labels from others (two
    annotators on an item's last place may both label it; more labels do no harm)."""
    annotator = _annotator(annotator)
    with session_scope(db_url) as session:
        task = _task(session, task_id)
        in_task = ReviewLabel.item_id.in_(select(ReviewItem.id).where(ReviewItem.task_id == task_id))
        task_items = select(ReviewItem.id).where(ReviewItem.task_id == task_id)
        assignments = session.execute(select(ReviewAssignment.item_id, ReviewAssignment.annotator)
                                      .where(ReviewAssignment.item_id.in_(task_items))).all()
        counts = dict(session.execute(select(ReviewLabel.item_id, func.count(ReviewLabel.id)).where(in_task)
                                      .group_by(ReviewLabel.item_id)).all())
        mine = set(session.scalars(select(ReviewLabel.item_id).where(in_task, ReviewLabel.annotator == annotator)))
        items = session.execute(select(ReviewItem.id, ReviewItem.position).where(ReviewItem.task_id == task_id)
                                .order_by(ReviewItem.position))
        if assignments:
            own = {item_id for item_id, name in assignments if name == annotator}
            return [QueueEntry(item_id, position, item_id in mine) for item_id, position in items if item_id in own]
        return [QueueEntry(item_id, position, item_id in mine) for item_id, position in items
                if item_id in mine or counts.get(item_id, 0) < task.annotators_per_item]


def _as_seen(label: ReviewLabel, a_is_first: bool) -> dict:
    """A stored label in the A/B terms of the annotator's view."""
    seen = {"first": "A", "second": "B"} if a_is_first else {"first": "B", "second": "A"}
    first, second = label.faithfulness_first, label.faithfulness_second
    return {"preference": seen.get(label.preference, label.preference),
            "faithfulness_a": first if a_is_first else second, "faithfulness_b": second if a_is_first else first,
            "tags": list(label.tags), "comment": label.comment}


def blind_item(db_url: str, item_id: int, annotator: str) -> dict:
    """What an annotator sees before answering: the context and the texts as A and B, and their own label so far
    (``label``: None, or preference, faithfulness_a, faithfulness_b, tags, comment). Nothing from ``hidden``."""
    annotator = _annotator(annotator)
    with session_scope(db_url) as session:
        item = _item(session, item_id)
        _assigned(session, item, annotator)
        a_is_first = order_for(item.task.seed, item.id, annotator)
        label = _own_label(session, item.id, annotator)
        return {"item_id": item.id, "task_id": item.task_id, "position": item.position,
                "context_label": item.context_label, "context": item.context,
                "text_a": item.first_text if a_is_first else item.second_text,
                "text_b": item.second_text if a_is_first else item.first_text,
                "label": None if label is None else _as_seen(label, a_is_first)}


def _faithfulness(value, text: str) -> int:
    if value is None:
        raise UserError(f"Rate the faithfulness of text {text} (1-5) before submitting")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value not in FAITHFULNESS:
        raise UserError(f"Faithfulness of text {text} is a whole number from 1 to 5; got {value!r}")
    return int(value)


def _error_tags(tags) -> list[str]:
    chosen = set(tags or ())
    unknown = sorted(map(str, chosen - set(ERROR_TAGS)))
    if unknown:
        raise UserError(f"Unknown error tag(s) {', '.join(unknown)}: choose among {', '.join(ERROR_TAGS)}")
    return [tag for tag in ERROR_TAGS if tag in chosen]


def _canonical(answer: dict, a_is_first: bool) -> dict:
    """An answer given on A and B, in terms of the first and second text."""
    sides = {"A": "first", "B": "second"} if a_is_first else {"A": "second", "B": "first"}
    a, b = answer["faithfulness_a"], answer["faithfulness_b"]
    return {"preference": sides.get(answer["preference"], answer["preference"]),
            "faithfulness_first": a if a_is_first else b, "faithfulness_second": b if a_is_first else a,
            "tags": answer["tags"], "comment": answer["comment"], "a_is_first": a_is_first}


LABEL_FIELDS = ("preference", "faithfulness_first", "faithfulness_second", "tags", "comment", "a_is_first")


def _upsert(db_url: str, item_id: int, annotator: str, answer: dict) -> None:
    """Writes the label and its history event in one transaction. To revise a label, a no-op update first
    takes the write lock (SQLite) or the row lock (PostgreSQL) and the label is read again, so what the event
    says it replaced is what it replaced; a first label racing another is refused by the unique key."""
    with session_scope(db_url) as session:
        item = _item(session, item_id)
        _assigned(session, item, annotator)
        values = _canonical(answer, order_for(item.task.seed, item.id, annotator))
        label = _own_label(session, item.id, annotator)
        if label is not None:
            session.execute(update(ReviewLabel).where(ReviewLabel.id == label.id).values(updated_at=utcnow()))
            session.refresh(label)
        old = None if label is None else {key: getattr(label, key) for key in LABEL_FIELDS}
        if label is None:
            session.add(ReviewLabel(item_id=item.id, annotator=annotator, **values))
        else:
            for key, value in values.items():
                setattr(label, key, value)
        session.add(ReviewLabelEvent(item_id=item.id, annotator=annotator, old=old,
                                     new={key: values[key] for key in LABEL_FIELDS}))


def save_label(db_url: str, item_id: int, annotator: str, preference: str, faithfulness_a: int,
               faithfulness_b: int, tags, comment: str) -> None:
    """Store this annotator's label of the item, replacing their earlier one."""
    annotator = _annotator(annotator)
    if preference is None:
        raise UserError("Choose a preference (A, B, tie or both bad) before submitting")
    if preference not in PREFERENCES:
        raise UserError(f"Preference must be one of {', '.join(PREFERENCES)}; got {preference!r}")
    answer = {"preference": preference, "faithfulness_a": _faithfulness(faithfulness_a, "A"),
              "faithfulness_b": _faithfulness(faithfulness_b, "B"), "tags": _error_tags(tags),
              "comment": str(comment or "").strip()}
    try:
        _upsert(db_url, item_id, annotator, answer)
    except IntegrityError:
        # Another session (a second tab, a double click) inserted this label between our read and our
        # insert; the unique key refused the duplicate, so this save becomes an update of that row.
        _upsert(db_url, item_id, annotator, answer)


def reveal(db_url: str, item_id: int, annotator: str | None = None) -> dict:
    """The item's hidden fields, with the pair's names. Given an annotator, only once they have labelled the
    item (at once in an unblinded task), and with which text A and B were for them; without one, for the reviewer."""
    with session_scope(db_url) as session:
        item = _item(session, item_id)
        pair = PAIRS[item.task.pair]
        revealed = dict(item.hidden) | {"pair": pair.label, "first_name": pair.first_name,
                                        "second_name": pair.second_name}
        if annotator is not None:
            annotator = _annotator(annotator)
            _assigned(session, item, annotator)
            if item.task.blind and _own_label(session, item.id, annotator) is None:
                raise UserError("Submit your label first: the conditions and scores are shown after it")
            a_is_first = order_for(item.task.seed, item.id, annotator)
            revealed["text_a_is"] = pair.first_name if a_is_first else pair.second_name
            revealed["text_b_is"] = pair.second_name if a_is_first else pair.first_name
        return revealed


# The reviewer's view: every label unblinded


def label_rows(db_url: str, task_id: int) -> list[dict]:
    """One dict per label: the label in canonical terms, its item's texts and every hidden field."""
    with session_scope(db_url) as session:
        task = _task(session, task_id)
        query = (select(ReviewLabel, ReviewItem).join(ReviewItem, ReviewItem.id == ReviewLabel.item_id)
                 .where(ReviewItem.task_id == task_id).order_by(ReviewItem.position, ReviewLabel.annotator))
        return [{"task_id": task.id, "pair": task.pair, "item_id": item.id, "position": item.position,
                 "annotator": label.annotator, "preference": label.preference,
                 "faithfulness_first": label.faithfulness_first, "faithfulness_second": label.faithfulness_second,
                 "tags": list(label.tags), "comment": label.comment, "a_is_first": label.a_is_first,
                 "created_at": label.created_at.isoformat(timespec="seconds"),
                 "updated_at": label.updated_at.isoformat(timespec="seconds")}
                | item.hidden
                | {"context_label": item.context_label, "context": item.context, "first_text": item.first_text,
                   "second_text": item.second_text}
                for label, item in session.execute(query)]


def annotator_progress(db_url: str, task_id: int) -> pd.DataFrame:
    """Per annotator of the task: the items assigned to them (none in an open task) and those they labelled."""
    with session_scope(db_url) as session:
        _task(session, task_id)
        in_task = select(ReviewItem.id).where(ReviewItem.task_id == task_id)
        assigned = Counter(session.scalars(select(ReviewAssignment.annotator)
                                           .where(ReviewAssignment.item_id.in_(in_task))))
        labelled = Counter(session.scalars(select(ReviewLabel.annotator).where(ReviewLabel.item_id.in_(in_task))))
    names = sorted(set(assigned) | set(labelled))
    return pd.DataFrame({"annotator": names, "assigned": [assigned[n] for n in names],
                         "labelled": [labelled[n] for n in names]}, columns=["annotator", "assigned", "labelled"])


def label_history(db_url: str, task_id: int) -> list[dict]:
    """Every save of every label of the task, oldest first: who, when, and each field before and after."""
    with session_scope(db_url) as session:
        _task(session, task_id)
        query = (select(ReviewLabelEvent, ReviewItem).join(ReviewItem, ReviewItem.id == ReviewLabelEvent.item_id)
                 .where(ReviewItem.task_id == task_id).order_by(ReviewLabelEvent.id))
        return [{"item_id": item.id, "position": item.position, "annotator": event.annotator,
                 "changed_at": event.changed_at.isoformat(timespec="seconds")}
                | {f"old_{key}": (event.old or {}).get(key) for key in LABEL_FIELDS}
                | {f"new_{key}": event.new[key] for key in LABEL_FIELDS}
                for event, item in session.execute(query)]


def export_history(db_url: str, task_id: int, fmt: str) -> str:
    """Every save of the task's labels, oldest first; in CSV the tags are joined by ';'."""
    return _export(label_history(db_url, task_id), fmt, ("old_tags", "new_tags"), [])


def labels_frame(db_url: str, task_id: int) -> pd.DataFrame:
    rows = label_rows(db_url, task_id)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(FRAME_COLUMNS))


def export_labels(db_url: str, task_id: int, fmt: str) -> str:
    """Every label of the task, unblinded; in CSV the tags are joined by ';'."""
    return _export(label_rows(db_url, task_id), fmt, ("tags",), list(FRAME_COLUMNS))


def _export(rows: list[dict], fmt: str, tag_columns: tuple[str, ...], empty_columns: list[str]) -> str:
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"Export format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}")
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=empty_columns)
    for column in tag_columns:
        if column in frame:
            frame[column] = frame[column].map(lambda tags: ";".join(tags) if isinstance(tags, list) else tags)
    return csv_text(frame, index=False)


MEASURES = (("preference", "nominal"), ("faithfulness_first", "ordinal"), ("faithfulness_second", "ordinal"))


def agreement(frame: pd.DataFrame) -> pd.DataFrame:
    """Per measure: the items with two labels or more, Cohen's kappa when exactly two annotators labelled the
    task, and Krippendorff's alpha (nominal for the preference, ordinal for faithfulness) in any case."""
    annotators = frame["annotator"].nunique()
    rows = []
    for measure, level in MEASURES:
        units = [values.tolist() for _, values in frame.groupby("item_id")[measure]]
        pairable = sum(len(unit) >= 2 for unit in units)
        kappa = math.nan
        if annotators == 2 and pairable:
            both = frame.pivot(index="item_id", columns="annotator", values=measure).dropna()
            kappa = cohen_kappa(both.iloc[:, 0].tolist(), both.iloc[:, 1].tolist())
        rows.append({"measure": measure, "level": level, "items": pairable, "annotators": annotators,
                     "cohen_kappa": kappa, "krippendorff_alpha": krippendorff_alpha(units, level)})
    return pd.DataFrame(rows)


def tag_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """How often each error tag was given, by compressor and ratio, over the labels of that group."""
    rows = []
    for (compressor, ratio), group in frame.groupby(["compressor", "ratio"], dropna=False):
        counts = Counter(tag for tags in group["tags"] for tag in tags)
        rows += [{"compressor": compressor, "ratio": ratio, "tag": tag, "count": counts[tag], "labels": len(group),
                  "share": counts[tag] / len(group)} for tag in ERROR_TAGS]
    return pd.DataFrame(rows, columns=["compressor", "ratio", "tag", "count", "labels", "share"])


def _exact_match_outcome(row: pd.Series) -> str | None:
    first, second = row.get(f"first_{EXACT_MATCH}"), row.get(f"second_{EXACT_MATCH}")
    if first is None or second is None or pd.isna(first) or pd.isna(second):
        return None
    return {(True, True): "both right", (True, False): "only first right", (False, True): "only second right",
            (False, False): "both wrong"}[(first > 0.5, second > 0.5)]


def preference_items(frame: pd.DataFrame) -> pd.DataFrame:
    """Per item: the share of labels giving each preference, the second text's BERTScore F1 against the first,
    and, where both were scored on a gold answer, which of them got it right."""
    rows = []
    for item_id, group in frame.groupby("item_id"):
        head = group.iloc[0]
        shares = group["preference"].value_counts(normalize=True)
        similarity = head.get(f"second_{PAIRS[head['pair']].similarity}")
        rows.append({"item_id": item_id, "position": head["position"], "compressor": head["compressor"],
                     "ratio": head["ratio"], "task": head["task"], "labels": len(group)}
                    | {f"share_{p}": float(shares.get(p, 0.0)) for p in CANONICAL_PREFERENCES}
                    | {"bertscore_f1": math.nan if similarity is None else float(similarity),
                       "exact_match": _exact_match_outcome(head)})
    return pd.DataFrame(rows, columns=["item_id", "position", "compressor", "ratio", "task", "labels",
                                       *(f"share_{p}" for p in CANONICAL_PREFERENCES), "bertscore_f1",
                                       "exact_match"])


def preference_vs_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """How human preference lines up with the metrics. One row for BERTScore F1 (of the second text against the
    first), with Spearman's correlation between it and the share of labels preferring the first text; then one
    row per exact-match outcome against the gold answer. Shares are means over items, each item weighing one."""
    items = preference_items(frame)
    shares = [f"share_{p}" for p in CANONICAL_PREFERENCES]
    rows = []
    scored = items.dropna(subset=["bertscore_f1"])
    if not scored.empty:
        rows.append({"comparison": "BERTScore F1 of the second text against the first", "group": "all scored items",
                     "items": len(scored)} | scored[shares].mean().to_dict()
                    | {"spearman_rho": spearman(scored["bertscore_f1"], scored["share_first"])})
    for outcome, group in items.dropna(subset=["exact_match"]).groupby("exact_match"):
        rows.append({"comparison": "exact match against the gold answer", "group": outcome, "items": len(group)}
                    | group[shares].mean().to_dict() | {"spearman_rho": math.nan})
    return pd.DataFrame(rows, columns=["comparison", "group", "items", *shares, "spearman_rho"])


def disagreements(frame: pd.DataFrame, top: int = 20) -> pd.DataFrame:
    """The items with two labels or more, most disputed first: by the entropy of their preferences (over
    log 4: 1 when the labels spread evenly over the four answers), then by the widest faithfulness range."""
    item_columns = [c for c in frame.columns if c not in LABEL_FIELDS]
    rows = []
    for _, group in frame.groupby("item_id"):
        if len(group) < 2:
            continue
        counts = group["preference"].value_counts()
        spread = max(group[side].max() - group[side].min() for side in ("faithfulness_first", "faithfulness_second"))
        rows.append(group.iloc[0][item_columns].to_dict()
                    | {"labels": len(group), "annotators": ", ".join(sorted(group["annotator"])),
                       "preferences": ", ".join(f"{p} {n}" for p, n in counts.items()),
                       "preference_entropy": normalized_entropy(group["preference"], len(PREFERENCES)),
                       "faithfulness_spread": int(spread)})
    if not rows:
        return pd.DataFrame(columns=[*item_columns, "labels", "annotators", "preferences", "preference_entropy",
                                     "faithfulness_spread"])
    table = pd.DataFrame(rows).sort_values(["preference_entropy", "faithfulness_spread", "position"],
                                           ascending=[False, False, True])
    return table.head(top).reset_index(drop=True)
