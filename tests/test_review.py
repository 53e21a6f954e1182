"""Review tasks (issue #6): building a task from stored runs, blind A/B annotation, labels and their agreement."""

import csv
import io
import json
import threading

import pandas as pd
import pytest
from sqlalchemy import create_engine, func, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.data.datasets import RECONSTRUCT_INSTRUCTION
from core.errors import UserError
from core.evaluation import review
from core.evaluation.stats import cohen_kappa, krippendorff_alpha, normalized_entropy, spearman
from db import models
from db.migrations import MIGRATIONS
from db.session import get_engine, migrate, schema_version, session_scope

EM = "exact_match@gold"
F1 = "bertscore_f1@original_output"
MODEL = "tiny-diffusion-model"
INSTRUCTION = "Solve the problem."
PAIR = "output_original_vs_compressed"


def stored_run(compressor: str, ratio: float, seed: int = 0) -> models.Run:
    return models.Run(kind="experiment", config_key=f"{compressor}|{ratio}|{seed}", model_id=MODEL, model_path="/m",
                      model_kind="llada", model_parameters=1, device="cpu", dtype="float32", preset="custom",
                      sampler_params={}, seed=seed, compressor=compressor, compressor_params={},
                      ratio_requested=ratio, bertscore_backbone="b", versions={}, timings={})


def stored_condition(name: str, prompt: str, output: str, metrics: dict, achieved: float = 1.0) -> models.Condition:
    condition = models.Condition(name=name, prompt_text=prompt, prompt_tokens=5, ratio_achieved=achieved)
    stored = models.Output(seed=0, text=output, token_ids=[], seconds=0.1, forward_calls=1, extracted_answer="7")
    stored.metrics = [models.Metric(name=key.split("@")[0], reference=key.split("@")[1], value=value)
                      for key, value in metrics.items()]
    condition.outputs.append(stored)
    return condition


def add_experiment(db_url, n_prompts=4, configs=(("random", 2.0), ("truncate", 3.0)),
                   conditions=("compressed", "reconstructed", "reasoning_on_reconstructed")) -> tuple[int, dict]:
    """A finished math experiment stored as the runner stores it: originals in a baseline run (compressor none),
    each compressor and ratio in a run of its own. Returns its id and every output text by
    (compressor, ratio, source_id, condition); the texts never name a condition or a compressor."""
    experiment = models.Experiment(name="study", plan={})
    texts = {}
    baseline = stored_run("none", 1.0)
    for i in range(n_prompts):
        item = models.Item(source="gsm8k", source_id=f"gsm8k/{i}", task="math", prompt=f"Tom has {i} apples.",
                           gold_answer=str(i))
        texts["none", 1.0, f"gsm8k/{i}", "original"] = f"Baseline answer {i}: {i}."
        item.conditions.append(stored_condition("original", f"{INSTRUCTION}\n\nTom has {i} apples.",
                                                f"Baseline answer {i}: {i}.", {EM: 1.0}))
        baseline.items.append(item)
    experiment.runs.append(baseline)
    for k, (compressor, ratio) in enumerate(configs):
        run = stored_run(compressor, ratio)
        for i in range(n_prompts):
            item = models.Item(source="gsm8k", source_id=f"gsm8k/{i}", task="math", prompt=f"Tom has {i} apples.",
                               gold_answer=str(i))
            cut = f"Tom {i} apples cut{k}"
            prompts = {"compressed": f"{INSTRUCTION}\n\n{cut}", "reconstructed": f"{RECONSTRUCT_INSTRUCTION}\n\n{cut}",
                       "reasoning_on_reconstructed": f"{INSTRUCTION}\n\nrestored {i}-{k}"}
            for name in conditions:
                text = f"restored {i}-{k}" if name == "reconstructed" else f"Answer {i}-{k}-{name[:4]}."
                texts[compressor, ratio, f"gsm8k/{i}", name] = text
                metrics = ({"bertscore_f1@original_prompt": 0.5} if name == "reconstructed"
                           else {EM: float(i % 2), F1: 0.8 + i / 100})
                item.conditions.append(stored_condition(name, prompts[name], text, metrics,
                                                        achieved=ratio - 0.1 if name == "compressed" else 1.0))
            run.items.append(item)
        experiment.runs.append(run)
    with session_scope(db_url) as session:
        session.add(experiment)
        session.flush()
        return experiment.id, texts


def task_items(db_url, task_id) -> list[models.ReviewItem]:
    with session_scope(db_url) as session:
        return session.scalars(select(models.ReviewItem).where(models.ReviewItem.task_id == task_id)
                               .order_by(models.ReviewItem.position)).all()


def new_task(db_url, n_items=8, annotators=2, seed=0, pair=PAIR) -> tuple[int, list[models.ReviewItem]]:
    experiment_id, _ = add_experiment(db_url)
    task_id = review.create_task(db_url, "t", [experiment_id], pair, n_items, annotators, seed)
    return task_id, task_items(db_url, task_id)


def answer_as(db_url, item_id, annotator, preference="A", a=4, b=2, tags=(), comment=""):
    review.save_label(db_url, item_id, annotator, preference, a, b, list(tags), comment)


def review_task_of(db_url, item_id) -> int:
    with session_scope(db_url) as session:
        return session.get(models.ReviewItem, item_id).task_id


def stored_labels(db_url) -> list[models.ReviewLabel]:
    with session_scope(db_url) as session:
        return session.scalars(select(models.ReviewLabel).order_by(models.ReviewLabel.id)).all()


# Schema and migration

def test_migration_4_adds_review_tables_to_a_version_3_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'v3.db'}"
    engine = create_engine(url)
    metadata = models.Base.metadata
    metadata.create_all(engine, tables=[t for t in metadata.sorted_tables if not t.name.startswith("review_")])
    with Session(engine) as session:
        session.add_all(models.SchemaMigration(version=v, name=name) for v, name, _ in MIGRATIONS[:3])
        session.add(models.Experiment(name="kept", plan={"n_prompts": 3}))
        session.commit()
    engine.dispose()

    assert schema_version(url) == MIGRATIONS[-1][0] == 10  # opening it migrates
    migrate(get_engine(url))  # a second pass changes nothing
    assert schema_version(url) == 10
    inspector = inspect(get_engine(url))
    assert {"review_tasks", "review_items", "review_labels"} <= set(inspector.get_table_names())
    unique = inspector.get_unique_constraints("review_labels")
    assert [c["column_names"] for c in unique] == [["item_id", "annotator"]]
    with session_scope(url) as session:
        assert [(e.name, e.plan) for e in session.scalars(select(models.Experiment))] == [("kept", {"n_prompts": 3})]


def test_the_schema_refuses_a_second_label_by_one_annotator_on_one_item(db_url):
    _, items = new_task(db_url, n_items=1)
    fields = dict(preference="first", faithfulness_first=3, faithfulness_second=3, tags=[], comment="",
                  a_is_first=True)
    with pytest.raises(IntegrityError):
        with session_scope(db_url) as session:
            session.add_all([models.ReviewLabel(item_id=items[0].id, annotator="ann", **fields),
                             models.ReviewLabel(item_id=items[0].id, annotator="ann", **fields)])
    with session_scope(db_url) as session:
        session.add_all([models.ReviewLabel(item_id=items[0].id, annotator=name, **fields) for name in ("ann", "bo")])
    assert len(stored_labels(db_url)) == 2  # one each is fine


def test_deleting_a_task_deletes_its_items_and_labels(db_url):
    task_id, items = new_task(db_url, n_items=2)
    answer_as(db_url, items[0].id, "ann")
    assert review.delete_task(db_url, task_id) and not review.delete_task(db_url, task_id)
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count(models.ReviewItem.id))) == 0
        assert session.scalar(select(func.count(models.ReviewLabel.id))) == 0


# Building a task

def test_a_task_samples_prompts_of_compressed_runs_with_its_seed(db_url):
    experiment_id, _ = add_experiment(db_url)  # 2 compressed runs x 4 prompts: 8 candidates

    def sampled(seed, ids=(experiment_id,), n=5):
        task_id = review.create_task(db_url, "", list(ids), PAIR, n, 2, seed)
        return [(i.hidden["run_id"], i.hidden["source_id"]) for i in task_items(db_url, task_id)]

    first = sampled(seed=7)
    assert len(first) == len(set(first)) == 5
    assert sampled(seed=7) == first  # same seed, same items in the same order
    assert sampled(seed=7, ids=[experiment_id, experiment_id]) == first  # repeats do not change the pool
    assert sampled(seed=8) != first
    everything = sampled(seed=7, n=100)  # fewer candidates than asked: all of them
    assert len(everything) == 8 and {run for run, _ in everything} == {2, 3}  # never the baseline run (1)
    task = review.list_tasks(db_url)[0]
    assert task["n_items"] == 100 and task["items"] == 8 and task["labels"] == 0
    assert task["name"].startswith(review.PAIRS[PAIR].label) and task["experiment_ids"] == [experiment_id]


@pytest.mark.parametrize("pair,first_condition,context", [
    ("output_original_vs_compressed", None, "Tom has {i} apples.\n\nGold answer: {i}"),
    ("output_original_vs_reasoning_on_reconstructed", None, "Tom has {i} apples.\n\nGold answer: {i}"),
    ("prompt_original_vs_reconstructed", "prompt", "Tom {i} apples cut{k}"),
])
def test_each_pair_takes_its_two_texts_and_context(db_url, pair, first_condition, context):
    experiment_id, texts = add_experiment(db_url)
    task_id = review.create_task(db_url, "pairs", [experiment_id], pair, 8, 1, 0)
    items = task_items(db_url, task_id)
    assert len(items) == 8
    second_condition = review.PAIRS[pair].second_condition
    for item in items:
        hidden = item.hidden
        i = int(hidden["source_id"].split("/")[1])
        k = 0 if hidden["compressor"] == "random" else 1
        expected_first = (f"Tom has {i} apples." if first_condition == "prompt"
                          else texts["none", 1.0, hidden["source_id"], "original"])
        assert item.first_text == expected_first
        assert item.second_text == texts[hidden["compressor"], hidden["ratio"], hidden["source_id"], second_condition]
        assert item.context == context.format(i=i, k=k)
        assert hidden["second_condition"] == second_condition and hidden["model"] == MODEL
        assert hidden["ratio_achieved"] == pytest.approx(hidden["ratio"] - 0.1)  # the compressed condition's
        if first_condition != "prompt":
            assert hidden[f"first_{EM}"] == 1.0 and hidden[f"second_{EM}"] == i % 2
            assert hidden[f"second_{F1}"] == pytest.approx(0.8 + i / 100)


@pytest.mark.parametrize("change,message", [
    ({"experiment_ids": []}, "at least one experiment"),
    ({"experiment_ids": [99]}, "No experiment #99"),
    ({"pair": "sideways"}, "Unknown pair 'sideways'"),
    ({"n_items": 0}, "number of items must be a whole number of at least 1"),
    ({"n_items": 2.5}, "number of items"),
    ({"annotators_per_item": 0}, "annotators per item must be a whole number of at least 1"),
    ({"name": "x" * 201}, "at most 200 characters"),
])
def test_bad_task_requests_are_refused(db_url, change, message):
    experiment_id, _ = add_experiment(db_url, n_prompts=1)
    request = dict(name="t", experiment_ids=[experiment_id], pair=PAIR, n_items=3, annotators_per_item=2, seed=0)
    with pytest.raises(UserError, match=message):
        review.create_task(db_url, **(request | change))


def test_a_pair_whose_condition_was_not_run_says_which(db_url):
    experiment_id, _ = add_experiment(db_url, n_prompts=2, conditions=("compressed",))
    with pytest.raises(UserError, match=r"no 'reconstructed' outputs"):
        review.create_task(db_url, "t", [experiment_id], "prompt_original_vs_reconstructed", 3, 1, 0)
    with session_scope(db_url) as session:  # originals exist, but under another seed than the compressed runs
        originals = select(models.Condition.id).where(models.Condition.name == "original")
        session.execute(update(models.Output).where(models.Output.condition_id.in_(originals)).values(seed=1))
    with pytest.raises(UserError, match=r"No prompt of experiment\(s\) #1 has both the original output and the "
                                        "compressed output"):
        review.create_task(db_url, "t", [experiment_id], PAIR, 3, 1, 0)
    with session_scope(db_url) as session:
        session.execute(models.Run.__table__.delete().where(models.Run.compressor == "none"))
    with pytest.raises(UserError, match=r"no 'original' outputs"):
        review.create_task(db_url, "t", [experiment_id], PAIR, 3, 1, 0)


# Blind annotation

def test_an_annotator_sees_no_hidden_field_and_a_fixed_order_of_their_own(db_url):
    task_id, items = new_task(db_url, n_items=8)
    hidden_words = {"random", "truncate", MODEL, "original", "compressed", "bertscore", "exact_match", "ratio",
                    "condition"}
    for item in items:
        seen = review.blind_item(db_url, item.id, "ann")
        assert set(seen) == {"item_id", "task_id", "position", "context_label", "context", "text_a", "text_b", "label"}
        assert not any(word in json.dumps(seen) for word in hidden_words)
        assert {seen["text_a"], seen["text_b"]} == {item.first_text, item.second_text}
        assert seen["label"] is None
        assert review.blind_item(db_url, item.id, " ann ") == seen  # the same annotator, the same order
    # Over many items the coin falls both ways, and differs between annotators on some items.
    orders = {name: [review.order_for(3, item_id, name) for item_id in range(200)] for name in ("ann", "bo")}
    assert 60 < sum(orders["ann"]) < 140
    assert 60 < sum(a != b for a, b in zip(orders["ann"], orders["bo"])) < 140
    assert review.order_for(3, 5, "ann") == review.order_for(3, 5, "ann")


def test_reveal_waits_for_the_label_unless_the_task_is_not_blind(db_url):
    from core.errors import UserError

    task_id, items = new_task(db_url, n_items=2)
    with pytest.raises(UserError, match="Submit your label first"):
        review.reveal(db_url, items[0].id, "ann")
    experiment_ids = review.list_tasks(db_url)[0]["experiment_ids"]
    open_task = review.create_task(db_url, "open", experiment_ids, PAIR, 2, 1, 0, blind=False)
    assert {t["id"]: t["blind"] for t in review.list_tasks(db_url)} == {task_id: True, open_task: False}
    item = task_items(db_url, open_task)[0]
    shown = review.reveal(db_url, item.id, "ann")
    assert shown["compressor"] == item.hidden["compressor"] and shown["text_a_is"] in ("original output",
                                                                                      "compressed output")


def test_a_label_is_stored_in_canonical_terms_and_shown_back_in_a_b(db_url):
    task_id, items = new_task(db_url, n_items=8)
    orders = {item.id: review.order_for(0, item.id, "ann") for item in items}  # the task's seed is 0
    a_first = next(i for i, first in orders.items() if first)
    b_first = next(i for i, first in orders.items() if not first)
    answer_as(db_url, a_first, "ann", "A", a=5, b=2, tags=["wrong_number", "omitted_information"], comment=" ok ")
    answer_as(db_url, b_first, "ann", "A", a=5, b=2)
    labels = {label.item_id: label for label in stored_labels(db_url)}
    assert (labels[a_first].preference, labels[a_first].faithfulness_first, labels[a_first].faithfulness_second,
            labels[a_first].a_is_first) == ("first", 5, 2, True)
    assert (labels[b_first].preference, labels[b_first].faithfulness_first, labels[b_first].faithfulness_second,
            labels[b_first].a_is_first) == ("second", 2, 5, False)
    assert labels[a_first].tags == ["omitted_information", "wrong_number"] and labels[a_first].comment == "ok"
    assert review.blind_item(db_url, a_first, "ann")["label"] == {
        "preference": "A", "faithfulness_a": 5, "faithfulness_b": 2,
        "tags": ["omitted_information", "wrong_number"], "comment": "ok"}
    assert review.blind_item(db_url, b_first, "bo")["label"] is None  # one sees only one's own labels

    revealed = review.reveal(db_url, b_first, "ann")
    assert revealed["text_a_is"] == "compressed output" and revealed["text_b_is"] == "original output"
    assert revealed["compressor"] in ("random", "truncate") and f"second_{F1}" in revealed
    with pytest.raises(UserError, match="Submit your label first"):
        review.reveal(db_url, b_first, "bo")
    assert review.reveal(db_url, b_first)["second_name"] == "compressed output"  # the reviewer's view


def test_saving_again_revises_the_one_label(db_url):
    _, items = new_task(db_url, n_items=1)
    item_id = items[0].id
    answer_as(db_url, item_id, "ann", "tie", a=3, b=3, tags=["other"], comment="first look")
    first = stored_labels(db_url)[0]
    answer_as(db_url, item_id, "ann", "both_bad", a=1, b=2, tags=[], comment="second look")
    (label,) = stored_labels(db_url)
    assert label.id == first.id and label.created_at == first.created_at and label.updated_at >= first.updated_at
    assert (label.preference, label.tags, label.comment) == ("both_bad", [], "second look")
    assert {label.faithfulness_first, label.faithfulness_second} == {1, 2}


def test_every_revision_is_kept_in_an_append_only_history_the_reviewer_exports(db_url):
    task_id, items = new_task(db_url, n_items=1)
    item_id = items[0].id
    answer_as(db_url, item_id, "ann", "tie", a=3, b=3, tags=["other"], comment="=first look")
    answer_as(db_url, item_id, "ann", "both_bad", a=1, b=2, tags=[], comment="second look")
    history = review.label_history(db_url, task_id)
    assert [(h["annotator"], h["old_preference"], h["new_preference"]) for h in history] == [
        ("ann", None, "tie"), ("ann", "tie", "both_bad")]
    assert history[1]["old_comment"] == "=first look" and history[1]["new_tags"] == []
    rows = list(csv.DictReader(io.StringIO(review.export_history(db_url, task_id, "csv"))))
    assert [r["new_comment"] for r in rows] == ["'=first look", "second look"]  # no formula reaches a spreadsheet
    assert rows[0]["new_tags"] == "other"
    assert [json.loads(line)["new_preference"] for line in review.export_history(db_url, task_id, "jsonl")
            .splitlines()] == ["tie", "both_bad"]


@pytest.mark.parametrize("change,message", [
    ({"annotator": "  "}, "Enter your name"),
    ({"annotator": "x" * 81}, "at most 80 characters"),
    ({"preference": "first"}, "Preference must be one of A, B, tie, both_bad"),
    ({"faithfulness_a": 0}, "Faithfulness of text A is a whole number from 1 to 5; got 0"),
    ({"faithfulness_b": 6}, "Faithfulness of text B"),
    ({"faithfulness_a": "3"}, "Faithfulness of text A"),
    ({"faithfulness_b": True}, "Faithfulness of text B"),
    ({"tags": ["typo"]}, "Unknown error tag"),
    ({"item_id": 999}, "No review item #999"),
])
def test_bad_labels_are_refused(db_url, change, message):
    _, items = new_task(db_url, n_items=1)
    label = dict(item_id=items[0].id, annotator="ann", preference="A", faithfulness_a=3, faithfulness_b=3,
                 tags=[], comment="")
    with pytest.raises(UserError, match=message):
        review.save_label(db_url, **(label | change))
    assert stored_labels(db_url) == []


def test_a_save_racing_another_session_becomes_an_update(db_url, monkeypatch):
    _, items = new_task(db_url, n_items=1)
    item_id = items[0].id
    real = review._own_label
    looked = []

    def rival_inserts_after_the_read(session, item, annotator):
        found = real(session, item, annotator)
        if not looked:  # the other tab's save lands between this save's read and its insert
            with session_scope(db_url) as rival:
                rival.add(models.ReviewLabel(item_id=item, annotator=annotator, preference="tie",
                                             faithfulness_first=1, faithfulness_second=1, tags=["other"],
                                             comment="rival", a_is_first=True))
        looked.append(found)
        return found

    monkeypatch.setattr(review, "_own_label", rival_inserts_after_the_read)
    answer_as(db_url, item_id, "ann", "both_bad", a=4, b=4, comment="mine")
    assert looked[0] is None and looked[1] is not None  # the insert was refused, the retry found the rival's row
    (label,) = stored_labels(db_url)
    assert (label.preference, label.faithfulness_first, label.comment, label.tags) == ("both_bad", 4, "mine", [])


def test_concurrent_saves_keep_exactly_one_label(db_url):
    _, items = new_task(db_url, n_items=1)
    item_id = items[0].id
    start = threading.Barrier(2)
    errors = []

    def save(preference):
        start.wait()
        try:
            for _ in range(5):
                answer_as(db_url, item_id, "ann", preference)
        except Exception as exc:  # any failure at all is what this test looks for
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(p,)) for p in ("tie", "both_bad")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    (label,) = stored_labels(db_url)
    assert label.preference in ("tie", "both_bad")
    # No revision lost: ten saves, ten events, each replacing what the one before it wrote.
    history = review.label_history(db_url, review_task_of(db_url, item_id))
    assert len(history) == 10 and history[0]["old_preference"] is None
    assert all(h["old_preference"] == before["new_preference"] for before, h in zip(history, history[1:]))
    assert history[-1]["new_preference"] == label.preference


def test_the_queue_resumes_and_drops_items_that_have_their_annotators(db_url):
    task_id, items = new_task(db_url, n_items=4, annotators=2)
    ids = [item.id for item in items]
    assert [(e.item_id, e.position, e.done) for e in review.queue(db_url, task_id, "ann")] == [
        (ids[0], 0, False), (ids[1], 1, False), (ids[2], 2, False), (ids[3], 3, False)]
    answer_as(db_url, ids[0], "ann")
    answer_as(db_url, ids[1], "ann")
    answer_as(db_url, ids[0], "bo")
    # ann resumes: her two labels are done and stay there to revise.
    assert [e.done for e in review.queue(db_url, task_id, "ann")] == [True, True, False, False]
    assert [e.item_id for e in review.queue(db_url, task_id, "bo")] == ids  # bo's own item 0 stays
    assert [(e.item_id, e.done) for e in review.queue(db_url, task_id, "cy")] == [
        (ids[1], False), (ids[2], False), (ids[3], False)]  # item 0 has its two annotators
    answer_as(db_url, ids[1], "cy")
    assert [e.item_id for e in review.queue(db_url, task_id, "di")] == ids[2:]
    with pytest.raises(UserError, match="No review task #99"):
        review.queue(db_url, 99, "ann")


# Statistics, checked against hand-computed values

def test_cohen_kappa_on_a_textbook_table():
    # 50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15. p_o = 35/50 = 0.7;
    # A says yes 25/50, B 30/50: p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a + [None], b + ["yes"]) == pytest.approx(0.4)  # an item only B rated does not count
    assert cohen_kappa(["x", "x"], ["x", "x"]) != cohen_kappa(["x", "x"], ["x", "x"])  # NaN: nothing to chance
    with pytest.raises(ValueError):
        cohen_kappa(["x"], ["x", "y"])


# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", example with 4 observers, 12 units and
# missing values: alpha is .743 nominal, .815 ordinal, .849 interval. Unit 12 has a single value.
KRIPPENDORFF = [[1, 1, None, 1], [2, 2, 3, 2], [3, 3, 3, 3], [3, 3, 3, 3], [2, 2, 2, 2], [1, 2, 3, 4],
                [4, 4, 4, 4], [1, 1, 2, 1], [2, 2, 2, 2], [None, 5, 5, 5], [None, None, 1, 1], [None, 3, None, None]]


@pytest.mark.parametrize("level,published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_matches_his_worked_example(level, published):
    units = [[v for v in unit if v is not None] for unit in KRIPPENDORFF]
    assert krippendorff_alpha(units, level) == pytest.approx(published, abs=5e-4)
    assert krippendorff_alpha(units + [[2], []], level) == krippendorff_alpha(units, level)  # unpairable: skipped


def test_krippendorff_alpha_edge_cases():
    assert krippendorff_alpha([[1, 2], [2, 1]]) == pytest.approx(1 - 3 * 4 / 8)  # o_12 = o_21 = 2, n = 4
    alpha = krippendorff_alpha([[3, 3], [3, 3, 3]])
    assert alpha != alpha  # no variation: undefined
    with pytest.raises(ValueError):
        krippendorff_alpha([[1, 2]], "ratio")


def test_spearman_and_entropy_by_hand():
    # y's ranks are 1, 2, 3.5, 5, 3.5: covariance of ranks 8, variances 10 and 9.5 -> 8 / sqrt(95).
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / 95 ** 0.5)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1], [1, 2]) != spearman([1, 1], [1, 2])  # a constant side: NaN
    assert normalized_entropy(["a", "a", "a"], 4) == 0.0
    assert normalized_entropy(["a", "b"], 4) == pytest.approx(0.5)  # log 2 / log 4
    assert normalized_entropy(["a", "b", "c", "d"], 4) == pytest.approx(1.0)


def labels(rows) -> pd.DataFrame:
    """A labels_frame by hand: (item, annotator, preference, faithfulness first, second, tags, compressor, ratio)."""
    frame = pd.DataFrame(rows, columns=["item_id", "annotator", "preference", "faithfulness_first",
                                        "faithfulness_second", "tags", "compressor", "ratio"])
    frame["position"] = frame["item_id"]
    frame["pair"] = PAIR
    frame["task"] = "math"
    return frame


TWO_ANNOTATORS = labels([
    (1, "ann", "first", 5, 4, ["omitted_information"], "random", 2.0),
    (1, "bo", "first", 5, 3, ["omitted_information", "wrong_number"], "random", 2.0),
    (2, "ann", "second", 2, 4, [], "random", 2.0),
    (2, "bo", "second", 2, 4, [], "random", 2.0),
    (3, "ann", "first", 4, 2, ["wrong_number"], "truncate", 3.0),
    (3, "bo", "tie", 3, 2, [], "truncate", 3.0),
    (4, "ann", "tie", 3, 3, [], "truncate", 3.0),
    (4, "bo", "tie", 3, 3, [], "truncate", 3.0),
])


def test_agreement_of_two_annotators_by_hand():
    table = review.agreement(TWO_ANNOTATORS).set_index("measure")
    assert table["items"].tolist() == [4, 4, 4] and table["annotators"].tolist() == [2, 2, 2]
    # Preference: 3 of 4 agree; ann gives first 2, second 1, tie 1, bo first 1, second 1, tie 2:
    # p_e = (2*1 + 1*1 + 1*2) / 16 = 5/16, kappa = (12/16 - 5/16) / (11/16) = 7/11.
    # Coincidences: first-first 2, second-second 2, tie-tie 2, first-tie 1 each way; n_first 3, n_second 2,
    # n_tie 3, n 8: alpha = 1 - 7 * 2 / (64 - 9 - 4 - 9) = 2/3.
    assert table.loc["preference", "cohen_kappa"] == pytest.approx(7 / 11)
    assert table.loc["preference", "krippendorff_alpha"] == pytest.approx(2 / 3)
    # Faithfulness of the first text: pairs (5,5) (2,2) (4,3) (3,3). ann: 5, 2, 4, 3 once each, bo: 5, 2, 3, 3:
    # p_e = (1 + 1 + 2) / 16, kappa = (12/16 - 4/16) / (12/16) = 2/3. Ordinal alpha: n_2=2, n_3=3, n_4=1, n_5=2;
    # the one disagreement 3-4 (both ways) has delta^2 = (3 + 1 - (3 + 1)/2)^2 = 4, so D_o sums 8; the expected
    # sum over ordered pairs is 2 * (6*6.25 + 2*20.25 + 4*36 + 3*4 + 6*12.25 + 2*2.25) = 624:
    # alpha = 1 - 7 * 8 / 624 = 71/78.
    assert table.loc["faithfulness_first", "cohen_kappa"] == pytest.approx(2 / 3)
    assert table.loc["faithfulness_first", "krippendorff_alpha"] == pytest.approx(71 / 78)
    assert table.loc["faithfulness_first", "level"] == "ordinal"


def test_agreement_of_three_annotators_has_alpha_only():
    frame = pd.concat([TWO_ANNOTATORS, labels([(1, "cy", "second", 1, 1, [], "random", 2.0)])])
    table = review.agreement(frame).set_index("measure")
    assert table["cohen_kappa"].isna().all() and table.loc["preference", "annotators"] == 3
    units = [["first", "first", "second"], ["second", "second"], ["first", "tie"], ["tie", "tie"]]
    assert table.loc["preference", "krippendorff_alpha"] == pytest.approx(krippendorff_alpha(units))
    empty = review.agreement(labels([]))
    assert empty["items"].tolist() == [0, 0, 0] and empty["krippendorff_alpha"].isna().all()


def test_tag_counts_by_compressor_and_ratio():
    table = review.tag_counts(TWO_ANNOTATORS).set_index(["compressor", "tag"])
    assert table.loc[("random", "omitted_information"), "count"] == 2
    assert table.loc[("random", "wrong_number"), "share"] == pytest.approx(1 / 4)  # 1 of random's 4 labels
    assert table.loc[("truncate", "wrong_number"), "count"] == 1
    assert table.loc[("truncate", "other"), "count"] == 0
    assert len(table) == 2 * len(review.ERROR_TAGS)


def test_preference_against_bertscore_and_exact_match():
    frame = TWO_ANNOTATORS.copy()
    frame[f"second_{F1}"] = frame["item_id"].map({1: 0.6, 2: 0.95, 3: 0.7, 4: 0.9})
    frame[f"first_{EM}"] = frame["item_id"].map({1: 1.0, 2: 0.0, 3: 1.0, 4: 1.0})
    frame[f"second_{EM}"] = frame["item_id"].map({1: 0.0, 2: 1.0, 3: 0.0, 4: 1.0})
    items = review.preference_items(frame).set_index("item_id")
    assert items["share_first"].tolist() == [1.0, 0.0, 0.5, 0.0] and items.loc[4, "share_tie"] == 1.0
    assert items["exact_match"].tolist() == ["only first right", "only second right", "only first right",
                                             "both right"]
    table = review.preference_vs_metrics(frame).set_index("group")
    # BERTScore ranks 1, 4, 2, 3 against share_first ranks 4, 1.5, 3, 1.5: deviations from 2.5 give a sum of
    # products -4.5 and sums of squares 5 and 4.5 -> -4.5 / sqrt(22.5).
    assert table.loc["all scored items", "spearman_rho"] == pytest.approx(-4.5 / 22.5 ** 0.5)
    assert table.loc["all scored items", "items"] == 4
    assert table.loc["only first right", "share_first"] == pytest.approx(0.75)  # items 1 and 3: 1.0 and 0.5
    assert table.loc["both right", "share_tie"] == 1.0


def test_disagreements_come_most_disputed_first():
    frame = pd.concat([TWO_ANNOTATORS, labels([(5, "ann", "first", 5, 5, [], "random", 2.0)])])
    table = review.disagreements(frame, top=3)
    assert table["item_id"].tolist() == [3, 1, 2]  # 3 splits the preference; 1 agrees but faithfulness 4 vs 3
    assert table.loc[0, "preference_entropy"] == pytest.approx(0.5) and table.loc[0, "annotators"] == "ann, bo"
    assert table.loc[1, "faithfulness_spread"] == 1 and table.loc[0, "compressor"] == "truncate"
    assert 5 not in review.disagreements(frame)["item_id"].tolist()  # a single label cannot disagree


# The reviewer's view from the database, and export

def test_labels_frame_and_export_round_trip(db_url):
    task_id, items = new_task(db_url, n_items=3)
    answer_as(db_url, items[0].id, "ann", "A", a=5, b=1, tags=["hallucinated_content", "reasoning_broken"],
              comment='says "7", not 8')
    answer_as(db_url, items[0].id, "bo", "tie", a=3, b=3)
    answer_as(db_url, items[1].id, "ann", "both_bad", a=1, b=1, tags=["format_or_truncation"])
    frame = review.labels_frame(db_url, task_id)
    assert len(frame) == 3 and list(zip(frame["item_id"], frame["annotator"])) == [
        (items[0].id, "ann"), (items[0].id, "bo"), (items[1].id, "ann")]
    assert {"compressor", "ratio", f"second_{F1}", "first_text", "context"} <= set(frame.columns)
    assert set(frame["preference"]) <= set(review.CANONICAL_PREFERENCES)
    assert review.agreement(frame).set_index("measure").loc["preference", "items"] == 1

    lines = [json.loads(line) for line in review.export_labels(db_url, task_id, "jsonl").splitlines()]
    assert [line["tags"] for line in lines] == [["hallucinated_content", "reasoning_broken"], [],
                                                ["format_or_truncation"]]
    assert lines[0]["comment"] == 'says "7", not 8' and lines[0]["compressor"] == frame.loc[0, "compressor"]
    table = list(csv.DictReader(io.StringIO(review.export_labels(db_url, task_id, "csv"))))
    assert [row["tags"] for row in table] == ["hallucinated_content;reasoning_broken", "", "format_or_truncation"]
    for row, line in zip(table, lines):
        assert (row["annotator"], row["preference"], int(row["faithfulness_first"]), row["comment"],
                row["second_text"]) == (line["annotator"], line["preference"], line["faithfulness_first"],
                                        line["comment"], line["second_text"])
    with pytest.raises(UserError, match="Export format"):
        review.export_labels(db_url, task_id, "xlsx")


def test_an_empty_task_exports_headers_and_empty_tables(db_url):
    task_id, _ = new_task(db_url, n_items=2)
    assert review.export_labels(db_url, task_id, "jsonl") == ""
    assert review.export_labels(db_url, task_id, "csv").splitlines()[0].startswith("task_id,pair,item_id")
    frame = review.labels_frame(db_url, task_id)
    assert frame.empty and review.tag_counts(frame).empty and review.disagreements(frame).empty
    assert review.preference_vs_metrics(frame).empty


def test_processes_saving_labels_at_once_leave_one_label_each_and_every_revision(db_url, tmp_path):
    """Three processes revise the labels of the same two items as the same annotators, five times each."""
    import os
    import subprocess
    import sys

    _, items = new_task(db_url, n_items=2)
    script = tmp_path / "save.py"
    script.write_text(
        "import sys\n"
        "from core.evaluation import review\n"
        "url, items, who = sys.argv[1], [int(i) for i in sys.argv[2].split(',')], sys.argv[3]\n"
        "for n in range(5):\n"
        "    for item in items:\n"
        "        for annotator in ('ann', 'bea'):\n"
        "            review.save_label(url, item, annotator, 'tie', 1 + n % 5, 3, [], f'{who}-{n}')\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo}
    workers = [subprocess.Popen([sys.executable, str(script), db_url, ",".join(str(i.id) for i in items), who],
                                cwd=repo, env=env, stderr=subprocess.PIPE, text=True) for who in "xyz"]
    failures = [w.communicate(timeout=240)[1] for w in workers if w.wait(timeout=240) != 0]
    assert failures == []
    labels = stored_labels(db_url)
    assert sorted((label.item_id, label.annotator) for label in labels) == sorted(
        (item.id, annotator) for item in items for annotator in ("ann", "bea"))
    history = review.label_history(db_url, review_task_of(db_url, items[0].id))
    assert len(history) == 3 * 5 * 2 * 2
    for label in labels:  # per label: a chain of saves, each replacing the one before, ending in the label
        chain = [h for h in history if (h["item_id"], h["annotator"]) == (label.item_id, label.annotator)]
        assert chain[0]["old_comment"] is None
        assert all(h["old_comment"] == before["new_comment"] for before, h in zip(chain, chain[1:]))
        assert chain[-1]["new_comment"] == label.comment
