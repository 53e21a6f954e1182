"""History: ratio and tag filters, sorting, tags (schema, migration, queries, page) and comparing two experiments."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from streamlit.testing.v1 import AppTest

from core.errors import UserError
from core.evaluation import analysis
from core.evaluation.stats import unpaired_bootstrap
from core.render import md_escape
from db import models
from db.queries import delete_run, distinct_tags, run_summaries, set_tags
from db.migrations import MIGRATIONS
from db.session import get_engine, migrate, schema_version, session_scope

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "history.py")
HOSTILE_TAG = "<script>alert('x')</script> **bold**"
EM = "exact_match@gold"


def new_run(**fields) -> models.Run:
    defaults = dict(kind="compare", model_id="m", model_path="/models/m", model_kind="llada", model_parameters=1000,
                    device="cpu", dtype="float32", preset="demo", sampler_params={}, seed=0, compressor="random",
                    compressor_params={}, ratio_requested=2.0, bertscore_backbone="b", versions={}, timings={})
    return models.Run(**(defaults | fields))


def scored_output(text: str, metrics: dict[str, float], seed: int = 0) -> models.Output:
    output = models.Output(seed=seed, text=text, token_ids=[], seconds=0.1, forward_calls=1)
    output.metrics += [models.Metric(name=key.split("@")[0], reference=key.split("@")[1], value=value)
                       for key, value in metrics.items()]
    return output


def add_playground_run(session, compressor="random", ratio=2.0, achieved=2.0, model="m", task="math",
                       prompt="Tom has 3 apples and 5 pears. How many fruits?") -> int:
    """A stored Playground run as the service writes it: one prompt, original and compressed, scored on gold."""
    run = new_run(model_id=model, compressor=compressor, ratio_requested=ratio)
    item = models.Item(source="custom", task=task, prompt=prompt, gold_answer="8")
    for name, text, achieved_here, right in (("original", prompt, 1.0, 1.0),
                                             ("compressed", prompt[: len(prompt) // 2], achieved, 0.0)):
        condition = models.Condition(name=name, prompt_text=text, prompt_tokens=10, ratio_achieved=achieved_here,
                                     words=[])
        condition.outputs.append(scored_output(f"The answer is {8 if right else 7}.", {EM: right}))
        item.conditions.append(condition)
    run.items.append(item)
    session.add(run)
    session.flush()
    return run.id


def add_experiment(session, name, scores, model="m") -> int:
    """``scores``: {(condition, source_id): {metric@reference: value}}. Originals go to a baseline run
    (compressor none, ratio 1), the other conditions to one run at random 2x, as the experiment runner stores them."""
    experiment = models.Experiment(name=name, plan={})
    runs: dict[str, models.Run] = {}
    items: dict[tuple[str, str], models.Item] = {}
    for (condition, source_id), metrics in scores.items():
        config = "none|1" if condition == "original" else "random|2"
        if config not in runs:
            compressor, ratio = config.split("|")
            runs[config] = new_run(kind="experiment", config_key=config, model_id=model, compressor=compressor,
                                   ratio_requested=float(ratio))
            experiment.runs.append(runs[config])
        if (config, source_id) not in items:
            items[config, source_id] = models.Item(source="gsm8k", source_id=source_id, task="math",
                                                   prompt=f"prompt {source_id}")
            runs[config].items.append(items[config, source_id])
        stored = models.Condition(name=condition, prompt_text=f"prompt {source_id}", prompt_tokens=5)
        stored.outputs.append(scored_output("answer", metrics))
        items[config, source_id].conditions.append(stored)
    session.add(experiment)
    session.flush()
    return experiment.id


def math_scores(original, compressed, extra=None):
    """Exact match per prompt p0, p1, ... under the original and the compressed condition."""
    scores = {("original", f"p{i}"): {EM: v} for i, v in enumerate(original)}
    scores |= {("compressed", f"p{i}"): {EM: v} | (extra or {}) for i, v in enumerate(compressed)}
    return scores


# Schema and migration

def test_migration_3_adds_tags_to_a_version_2_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'v2.db'}"
    engine = create_engine(url)
    # What version 2 created: every table but tags, and migrations 1 and 2 recorded.
    metadata = models.Base.metadata
    metadata.create_all(engine, tables=[t for t in metadata.sorted_tables if t.name != "tags"])
    with Session(engine) as session:
        session.add_all(models.SchemaMigration(version=version, name=name) for version, name, _ in MIGRATIONS[:2])
        add_playground_run(session)
        session.commit()
    assert "tags" not in inspect(engine).get_table_names()
    engine.dispose()

    assert schema_version(url) == MIGRATIONS[-1][0] == 10  # opening it migrates
    migrate(get_engine(url))  # a second pass changes nothing
    assert schema_version(url) == 10
    unique = inspect(get_engine(url)).get_unique_constraints("tags")
    assert [c["column_names"] for c in unique] == [["run_id", "name"]]
    with session_scope(url) as session:
        assert [r["run"] for r in run_summaries(session)] == [1]  # the old run is still there
        assert set_tags(session, 1, ["kept"]) == ["kept"]
    with session_scope(url) as session:
        assert run_summaries(session)[0]["tags"] == ["kept"]
        delete_run(session, 1)
    with session_scope(url) as session:
        assert session.query(models.Tag).count() == 0  # the migrated table cascades too


def test_a_run_cannot_carry_the_same_tag_twice(db_url):
    with session_scope(db_url) as session:
        run_id = add_playground_run(session)
        session.add(models.Tag(run_id=run_id, name="math"))
    with pytest.raises(IntegrityError):
        with session_scope(db_url) as session:
            session.add(models.Tag(run_id=run_id, name="math"))
    with session_scope(db_url) as session:
        assert [t.name for t in session.scalars(select(models.Tag))] == ["math"]


def test_set_tags_normalises_and_is_idempotent(db_url):
    with session_scope(db_url) as session:
        run_id = add_playground_run(session)
        assert set_tags(session, run_id, ["  good   run ", "good run", "", "  ", "math"]) == ["good run", "math"]
    with session_scope(db_url) as session:
        first = {t.name: (t.id, t.created_at) for t in session.scalars(select(models.Tag))}
        assert set_tags(session, run_id, ["math", "good run"]) == ["good run", "math"]
    with session_scope(db_url) as session:
        assert {t.name: (t.id, t.created_at) for t in session.scalars(select(models.Tag))} == first  # untouched
        assert set_tags(session, run_id, ["math", "new"]) == ["math", "new"]
    with session_scope(db_url) as session:
        assert sorted(t.name for t in session.scalars(select(models.Tag))) == ["math", "new"]

    with pytest.raises(UserError, match="at most 60 characters; one has 61"):
        with session_scope(db_url) as session:
            set_tags(session, run_id, ["ok", "x" * 61])
    with pytest.raises(UserError, match="No run #99"):
        with session_scope(db_url) as session:
            set_tags(session, 99, ["ok"])
    with session_scope(db_url) as session:
        assert run_summaries(session)[0]["tags"] == ["math", "new"]  # a refused change stored nothing


def test_tags_go_with_their_run(db_url):
    with session_scope(db_url) as session:
        first, second = add_playground_run(session), add_playground_run(session)
        set_tags(session, first, ["a", "b"])
        set_tags(session, second, ["b"])
    with session_scope(db_url) as session:
        assert delete_run(session, first)
    with session_scope(db_url) as session:
        assert [(t.run_id, t.name) for t in session.scalars(select(models.Tag))] == [(second, "b")]
        assert distinct_tags(session) == ["b"]


# Listing

def test_run_summaries_filters_by_ratio_and_tag_and_sorts_before_the_limit(db_url):
    with session_scope(db_url) as session:
        ids = [add_playground_run(session, compressor=c, ratio=r, achieved=a, model=m)
               for c, r, a, m in (("random", 2.0, 1.8, "m2"), ("truncate", 3.0, 3.1, "m1"),
                                  ("random", 1.5, 1.4, "m1"))]
        set_tags(session, ids[0], ["keep"])
        set_tags(session, ids[2], ["keep", "odd"])
        add_experiment(session, "e", math_scores([1], [0]))

    def listed(**filters):
        with session_scope(db_url) as session:
            return [r["run"] for r in run_summaries(session, **filters)]

    assert listed() == [3, 2, 1]  # newest first, the experiment's runs left out
    assert listed(ratio=3.0) == [2]
    assert listed(tag="keep") == [3, 1] and listed(tag="odd") == [3] and listed(tag="none") == []
    assert listed(tag="keep", ratio=2.0) == [1]
    assert listed(sort="oldest first") == [1, 2, 3]
    assert listed(sort="ratio asked, lowest first") == [3, 1, 2]
    assert listed(sort="ratio achieved, highest first") == [2, 1, 3]
    assert listed(sort="compressor") == [3, 1, 2]  # random (newest first), then truncate
    assert listed(sort="model") == [3, 2, 1]
    assert listed(sort="ratio asked, highest first", limit=1) == [2]  # sorted over all runs, then cut
    with session_scope(db_url) as session:
        assert {r["run"]: r["tags"] for r in run_summaries(session)} == {3: ["keep", "odd"], 2: [], 1: ["keep"]}
        assert distinct_tags(session) == ["keep", "odd"]
        with pytest.raises(UserError, match="Unknown sort"):
            run_summaries(session, sort="alphabetical")


# Comparing experiments

def test_unpaired_bootstrap_finds_a_shift_and_not_noise():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 200), rng.normal(0.5, 1, 300)
    shift = unpaired_bootstrap(a, b)
    assert shift.difference == pytest.approx(b.mean() - a.mean())
    assert shift.low < shift.difference < shift.high and shift.low > 0 and shift.p_value < 0.01
    assert shift.effect_size == pytest.approx(0.5, abs=0.2) and (shift.n_a, shift.n_b) == (200, 300)
    noise = unpaired_bootstrap(a, rng.normal(0, 1, 300))
    assert noise.low < 0 < noise.high and noise.p_value > 0.05
    with pytest.raises(ValueError):
        unpaired_bootstrap([], [1.0])


def test_compare_experiments_pairs_the_same_prompts_and_not_others():
    a = pd.DataFrame(dict(model="m", compressor="none", ratio=1.0, seed=0, source="gsm8k", source_id=f"p{i}",
                          task="math", condition="original", **{EM: v}) for i, v in enumerate([1, 1, 1, 0]))
    a = pd.concat([a, a.assign(condition="compressed", compressor="random", ratio=2.0, **{EM: [1, 0, 0, 0]})])
    # B: another model on the very same prompts and configurations.
    b = a.assign(model="ar", **{EM: [1, 1, 1, 1] + [1, 1, 0, 0]})
    table = analysis.compare_experiments(a, b).set_index("condition")
    assert list(table.index) == ["original", "compressed"] and set(table["metric"]) == {EM}
    assert table.loc["original", ["mean_a", "n_a", "mean_b", "n_b"]].tolist() == [0.75, 4, 1.0, 4]
    assert table.loc["compressed", ["mean_a", "mean_b"]].tolist() == [0.25, 0.5]
    assert table["difference"].tolist() == pytest.approx([0.25, 0.25])
    assert (table["pairing"] == "paired").all()
    # Every per-prompt difference is 0 or +1, so a paired interval cannot go below 0.
    assert (table["low"] == 0).all() and (table["high"] >= table["difference"]).all()

    # C: six prompts under compression only, so nothing pairs and the original has no B side.
    c = pd.DataFrame(dict(model="m", compressor="random", ratio=2.0, seed=0, source="gsm8k", source_id=f"p{i}",
                          task="math", condition="compressed", **{EM: v}) for i, v in enumerate([1, 1, 1, 0, 0, 0]))
    table = analysis.compare_experiments(a, c).set_index("condition")
    original, compressed = table.loc["original"], table.loc["compressed"]
    assert original["pairing"] == "only in A" and original["n_b"] == 0 and np.isnan(original["difference"])
    assert compressed["pairing"] == "unpaired" and compressed[["n_a", "n_b"]].tolist() == [4, 6]
    assert compressed["difference"] == pytest.approx(0.5 - 0.25)
    expected = unpaired_bootstrap([1, 0, 0, 0], [1, 1, 1, 0, 0, 0])
    assert (compressed["low"], compressed["high"], compressed["p_value"]) == pytest.approx(
        (expected.low, expected.high, expected.p_value))
    assert compressed["low"] <= compressed["difference"] <= compressed["high"]

    # A second output under one key (two seeds' worth of rows for one prompt in B) also stops the pairing.
    doubled = pd.concat([b, b[b["source_id"] == "p0"]])
    assert set(analysis.compare_experiments(a, doubled)["pairing"]) == {"unpaired"}


def test_compare_experiments_against_another_reference_keeps_exact_match():
    frame = pd.DataFrame(dict(model="m", compressor="random", ratio=2.0, seed=0, source="duc", source_id=f"d{i}",
                              task="summarization", condition="compressed", **{EM: 0.0, "rougeL@reference_summary": v,
                                                                                "bleu@gold": 9.0})
                         for i, v in enumerate([0.2, 0.4]))
    other = frame.assign(**{"rougeL@reference_summary": [0.3, 0.7]})
    table = analysis.compare_experiments(frame, other, reference="reference_summary")
    assert table["metric"].tolist() == [EM, "rougeL@reference_summary"]  # not bleu@gold
    rouge = table.iloc[1]
    assert rouge["mean_a"] == pytest.approx(0.3) and rouge["mean_b"] == pytest.approx(0.5)
    assert rouge["difference"] == pytest.approx(0.2) and rouge["pairing"] == "paired"
    assert analysis.compare_experiments(frame.iloc[0:0], frame.iloc[0:0]).empty


# The page

def page_texts(at) -> list[str]:
    """Everything the page renders as markdown or HTML."""
    texts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success") for e in at.get(kind)]
    return texts + [e.proto.body for e in at.get("html")]


def dataframe_with(at, column) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_history_filters_by_ratio_and_tag_and_edits_tags(db_url):
    with session_scope(db_url) as session:
        for compressor, ratio in (("random", 2.0), ("truncate", 3.0), ("random", 3.0)):
            add_playground_run(session, compressor=compressor, ratio=ratio)
        set_tags(session, 1, ["baseline"])
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    assert any("Experiments are browsed on the Results page" in c.value for c in at.caption)
    assert list(at.dataframe[0].value.index) == [3, 2, 1]

    at.selectbox(key="ratio-filter").set_value(3.0).run()
    assert list(at.dataframe[0].value.index) == [3, 2]
    at.selectbox(key="ratio-filter").set_value("(all)")
    at.selectbox(key="tag-filter").set_value("baseline").run()
    assert list(at.dataframe[0].value.index) == [1]
    assert at.selectbox(key="open-run").value == 1 and at.multiselect(key="tags-1").value == ["baseline"]

    at.multiselect(key="tags-1").set_value(["baseline", HOSTILE_TAG]).run()
    assert not at.exception and not at.error
    with session_scope(db_url) as session:
        assert run_summaries(session, tag="baseline")[0]["tags"] == sorted(["baseline", HOSTILE_TAG])
    assert at.dataframe[0].value.loc[1, "tags"].tolist() == sorted(["baseline", HOSTILE_TAG])
    assert HOSTILE_TAG in at.selectbox(key="tag-filter").options  # offered as a filter, as plain text
    assert not any("<script>" in text or "**bold**" in text for text in page_texts(at))

    long_tag = "<b>" + "y" * 70
    at.multiselect(key="tags-1").set_value(["baseline", long_tag]).run()
    assert not at.exception
    assert at.error[0].value == md_escape(f"A tag has at most 60 characters; one has 73, starting {long_tag[:20]!r}.")
    with session_scope(db_url) as session:
        assert run_summaries(session, tag="baseline")[0]["tags"] == sorted(["baseline", HOSTILE_TAG])


def test_history_compares_two_experiments(db_url):
    with session_scope(db_url) as session:
        add_experiment(session, "llada", math_scores([1, 1, 1, 0], [1, 0, 0, 0]))
        add_experiment(session, "<i>control</i>", math_scores([1, 1, 1, 1], [1, 1, 0, 0]), model="ar")
        session.add(models.Experiment(name="queued", plan={}))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert at.info[0].value.startswith("No stored runs yet")  # the runs tab; the experiments are not runs here

    at.selectbox(key="compare-a").set_value(1)
    at.selectbox(key="compare-b").set_value(2).run()
    assert not at.exception and not at.error
    table = dataframe_with(at, "pairing").set_index("condition")
    assert table.loc["original", ["mean_a", "mean_b", "difference"]].tolist() == pytest.approx([0.75, 1.0, 0.25])
    assert table.loc["compressed", ["mean_a", "mean_b", "difference"]].tolist() == pytest.approx([0.25, 0.5, 0.25])
    assert (table["pairing"] == "paired").all()
    assert [b.label for b in at.get("download_button")] == ["Download comparison (CSV)",
                                                            "Download degradation comparison (CSV)"]
    assert len(at.get("plotly_chart")) == 1
    costs = [d.value for d in at.dataframe if "pairing" in d.value][1].set_index("condition")
    # Each loses two of four answers to compression: A's drops 0, -1, -1, 0; B's 0, 0, -1, -1.
    assert costs.loc["compressed", ["mean_a", "mean_b", "difference"]].tolist() == pytest.approx([-0.5, -0.5, 0.0])

    at.selectbox(key="compare-b").set_value(1).run()
    assert not at.exception
    assert at.warning[0].value == "A and B are the same experiment: pick two different ones."
    at.selectbox(key="compare-b").set_value(3).run()
    assert not at.exception
    assert at.info[-1].value.startswith("Experiment #3 has no outputs yet")
    assert not at.get("plotly_chart")


def test_compare_degradation_sets_each_experiment_s_loss_against_its_own_originals():
    a = pd.DataFrame(dict(model="m", compressor="none", ratio=1.0, seed=0, source="gsm8k", source_id=f"p{i}",
                          task="math", condition="original", **{EM: v}) for i, v in enumerate([1, 1, 1, 0]))
    a = pd.concat([a, a.assign(condition="compressed", compressor="random", ratio=2.0, **{EM: [1, 0, 0, 0]})])
    # B, another model: right on every original, and compression costs it one prompt where it costs A two.
    b = a.assign(model="dream", **{EM: [1, 1, 1, 1] + [1, 1, 1, 0]})
    table = analysis.compare_degradation(a, b)
    assert table[["condition", "task", "metric", "pairing"]].values.tolist() == [["compressed", "math", EM, "paired"]]
    row = table.iloc[0]
    assert (row["mean_a"], row["mean_b"]) == (pytest.approx(-0.5), pytest.approx(-0.25))  # drops 0,-1,-1,0 / 0,0,0,-1
    assert row["difference"] == pytest.approx(0.25) and row["n_a"] == row["n_b"] == 4
