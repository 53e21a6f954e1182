"""The Review page: a reviewer creates a task, annotators label it blind, and the results are unblinded and exported."""

import io
import json
from html import escape
from pathlib import Path

import pandas as pd
import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from core.evaluation import review
from core.pipeline.experiments import Runner, find_or_create
from core.pipeline.service import ModelPool
from db.models import ReviewLabel, ReviewTask
from db.session import session_scope

REVIEW = Path(__file__).resolve().parents[1] / "pages" / "review.py"
COMMENT = "<b>Mirela</b> thinks $3 and $5 were dropped"


@pytest.fixture
def experiment(tiny_plan, tiny_checkpoint, db_url, monkeypatch):
    monkeypatch.setenv("COMPRESSLENS_MODEL", str(tiny_checkpoint))
    # 2 prompts x 2 ratios, and only the pair's two conditions: four items to review, in one batch per run.
    plan = tiny_plan(tiny_checkpoint, n_prompts=2, conditions=["original", "compressed"])
    experiment_id = find_or_create(plan, db_url)
    Runner(experiment_id, ModelPool("cpu"), db_url).run()
    return experiment_id


def page(part="annotate", annotator=None):
    at = AppTest.from_file(str(REVIEW), default_timeout=60)
    at.run()
    if part != "annotate":
        at.radio(key="review-part").set_value(part).run()
    if annotator is not None:
        at.text_input(key="annotator").input(annotator).run()
    assert not at.exception, at.exception
    return at


def page_text(at) -> str:
    """Every string the page sends to the browser: element protos (markdown, html, widgets, metrics, charts) and the
    cells of its tables."""
    parts = []

    def walk(node):
        if node.type == "dataframe":
            parts.append(node.value.to_csv())
        elif getattr(node, "proto", None) is not None:
            parts.append(str(node.proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at.main)
    walk(at.sidebar)
    return "\n".join(parts)


def labels(url):
    with session_scope(url) as session:
        return [(label.item_id, label.annotator, label.preference, label.faithfulness_first,
                 label.faithfulness_second, label.tags, label.comment) for label in session.query(ReviewLabel)]


def button(at, label):
    return next(b for b in at.button if b.label == label)


def fill(at, item_id, annotator, preference=None, faithfulness=(None, None), tags=(), comment=""):
    suffix = f"{item_id}-{annotator}"
    if preference is not None:
        at.radio(key=f"preference-{suffix}").set_value(preference)
    for side, value in zip("ab", faithfulness):
        if value is not None:
            at.radio(key=f"faithfulness_{side}-{suffix}").set_value(value)
    at.multiselect(key=f"tags-{suffix}").set_value(list(tags))
    at.text_area(key=f"comment-{suffix}").input(comment)
    button(at, "Submit").click().run()
    assert not at.exception, at.exception


def current_item(at, annotator, task_id=1):
    return at.selectbox(key=f"review-item-{task_id}-{annotator}").value


def hidden_strings(url, item_id):
    """What the reviewer's reveal knows of an item and the annotator's page must not show before their label."""
    revealed = review.reveal(url, item_id)
    return [revealed["compressor"], f"{revealed['ratio']:g}x", revealed["first_name"], revealed["second_name"],
            "BERTScore", "Exact match", "Ratio achieved", "Revealed", revealed["model"]]


def create_task(at, experiment_id, name="blind check", items=4, per_item=2):
    at.text_input[0].input(name)
    if experiment_id is not None:
        at.multiselect[0].set_value([experiment_id])
    at.number_input[0].set_value(items)
    at.number_input[1].set_value(per_item)
    button(at, "Create task").click().run()
    assert not at.exception, at.exception


def test_annotators_label_blind_resume_revise_and_export(experiment, db_url, monkeypatch):
    at = page(annotator="Mirela")
    assert at.info[0].value.startswith("No review task for you yet")

    at = page("create")
    create_task(at, None)
    assert "Choose at least one experiment" in at.error[0].value
    create_task(at, experiment)
    assert at.success[0].value.startswith("Task #1 created with 4 items")
    with session_scope(db_url) as session:
        assert session.query(ReviewTask).count() == 1

    at.radio(key="review-part").set_value("annotate").run()
    assert at.info[0].value == "Enter your name to see your queue."
    at.text_input(key="annotator").input("   ").run()
    assert at.info[0].value == "Enter your name to see your queue." and not at.get("html")

    at.text_input(key="annotator").input("Mirela").run()
    assert not at.exception, at.exception
    assert at.get("progress")[0].proto.text == "0 of 4 done"
    first = current_item(at, "Mirela")
    blind = review.blind_item(db_url, first, "Mirela")
    bodies = " ".join(element.proto.body for element in at.get("html"))
    assert all(escape(blind[key]) in bodies for key in ("context", "text_a", "text_b"))
    hidden = hidden_strings(db_url, first)
    before = page_text(at)
    assert [s for s in hidden if s in before] == []

    fill(at, first, "Mirela", faithfulness=(4, 2))  # no preference
    assert at.error[0].value == "Choose a preference (A, B, tie or both bad) before submitting" and labels(db_url) == []

    fill(at, first, "Mirela", "A", (4, 2), ["wrong_number"], COMMENT)
    assert at.success[0].value.startswith("Saved.")
    a_is_first = review.order_for(0, first, "Mirela")
    stored = [(first, "Mirela", "first" if a_is_first else "second", 4 if a_is_first else 2, 2 if a_is_first else 4,
               ["wrong_number"], COMMENT)]
    assert labels(db_url) == stored
    after = page_text(at)
    assert [s for s in hidden if s not in after] == []
    a_is = "original output" if a_is_first else "compressed output"
    assert any(f"Text A was the **{a_is}**" in m.value for m in at.markdown)
    assert at.get("progress")[0].proto.text == "1 of 4 done"

    button(at, "Next →").click().run()
    second = current_item(at, "Mirela")
    assert second != first and "Revealed" not in [s.value for s in at.subheader]
    assert [s for s in hidden_strings(db_url, second) if s in page_text(at)] == []

    # A reload resumes at the first item Mirela has not labelled; her first label comes back to be revised.
    at = page(annotator="Mirela")
    assert current_item(at, "Mirela") == second and at.get("progress")[0].proto.text == "1 of 4 done"
    assert "Item 1 ✓" in at.selectbox(key="review-item-1-Mirela").options
    button(at, "← Previous").click().run()
    assert current_item(at, "Mirela") == first
    suffix = f"{first}-Mirela"
    assert at.radio(key=f"preference-{suffix}").value == "A"
    assert (at.radio(key=f"faithfulness_a-{suffix}").value, at.radio(key=f"faithfulness_b-{suffix}").value) == (4, 2)
    assert at.multiselect(key=f"tags-{suffix}").value == ["wrong_number"]
    assert at.text_area(key=f"comment-{suffix}").value == COMMENT
    assert "Revealed" in [s.value for s in at.subheader]
    at.radio(key=f"preference-{suffix}").set_value("tie")
    button(at, "Save my revised label").click().run()
    assert not at.exception, at.exception
    assert labels(db_url) == [stored[0][:2] + ("tie",) + stored[0][3:]]

    # A second annotator starts afresh, sees nothing of Mirela's label, and stays blind.
    at = page(annotator="Bea")
    assert current_item(at, "Bea") == first and at.get("progress")[0].proto.text == "0 of 4 done"
    suffix = f"{first}-Bea"
    assert at.radio(key=f"preference-{suffix}").value is None and at.text_area(key=f"comment-{suffix}").value == ""
    text = page_text(at)
    assert "Mirela" not in text and "dropped" not in text
    assert [s for s in hidden_strings(db_url, first) if s in text] == []
    fill(at, first, "Bea", "B", (3, 3), ["omitted_information", "other"], "")
    assert len(labels(db_url)) == 2

    # The reviewer's view: unblinded, with agreement and both exports.
    downloads = {}
    keep = MemoryMediaFileStorage.load_and_get_id

    def capture(self, data, mimetype, kind, filename=None):
        downloads[filename] = data
        return keep(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", capture)
    at = page("results")
    assert {m.label: m.value for m in at.metric} == {"Labels": "2", "Annotators": "2",
                                                     "Items with all their labels": "1 of 4"}
    tables = [frame.value for frame in at.dataframe]
    agreement = next(t for t in tables if "krippendorff_alpha" in t.columns)
    assert list(agreement["measure"]) == ["preference", "faithfulness_first", "faithfulness_second"]
    assert agreement["items"].tolist() == [1, 1, 1]
    assert any("tag" in t.columns and "share" in t.columns for t in tables) and at.get("plotly_chart")
    assert {"Most disagreed items", "Human preference and the metrics"} <= {s.value for s in at.subheader}
    assert [b.label for b in at.get("download_button")] == ["Download labels (CSV)", "Download labels (JSONL)",
                                                            "Download history (CSV)", "Download history (JSONL)"]
    # Mirela's first label, her revision, then Bea's: three saves in the history, oldest first.
    history = pd.read_csv(io.BytesIO(downloads["review-task-1-history.csv"]), keep_default_na=False)
    assert list(history["annotator"]) == ["Mirela", "Mirela", "Bea"]
    assert history["old_preference"].tolist()[:2] == ["", history["new_preference"][0]]
    csv = pd.read_csv(io.BytesIO(downloads["review-task-1-labels.csv"]))
    assert sorted(csv["annotator"]) == ["Bea", "Mirela"] and set(csv["compressor"]) == {"random"}
    assert csv.set_index("annotator").loc["Bea", "tags"] == "omitted_information;other"
    lines = [json.loads(line) for line in downloads["review-task-1-labels.jsonl"].decode().splitlines()]
    assert [(row["annotator"], row["comment"]) for row in lines] == [("Bea", ""), ("Mirela", COMMENT)]


def test_app_lists_review_after_history(tiny_checkpoint, db_url, monkeypatch, app_navigation):
    monkeypatch.setenv("COMPRESSLENS_MODEL", str(tiny_checkpoint))
    at = AppTest.from_file(str(REVIEW.parents[1] / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/review.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Review" and at.info[0].value == "Enter your name to see your queue."


def test_an_unblinded_task_shows_what_each_text_is_before_the_label(experiment, db_url):
    task_id = review.create_task(db_url, "open reading", [experiment], "output_original_vs_compressed", 2, 1, 0,
                                 blind=False)
    at = page(annotator="Ines")
    assert any(option.startswith(f"#{task_id} open reading") and "not blind" in option
               for option in at.selectbox(key="annotate-task").options)
    assert "Revealed" in {s.value for s in at.subheader}
    assert any(m.label == "Compressor" for m in at.metric)
