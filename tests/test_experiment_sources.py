"""Experiment prompt sources beyond the registered datasets: DUC2004 from the user's folder, JSONL/CSV files,
uploads stored inline; per-task generation settings from the Experiments page to the stored runs."""

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from core.data import datasets
from core.errors import UserError
from core.llada.sampler import PRESETS
from core.pipeline.experiments import Plan, Runner, find_or_create, sample_prompts
from core.pipeline.service import ModelPool
from db import models
from db.queries import experiment_states
from db.session import session_scope

PAGE = Path(__file__).resolve().parents[1] / "pages" / "experiments.py"
DEMO = "compresslens/math-demo"


def sgml(docno: str, text: str) -> str:
    return (f"<DOC>\n<DOCNO> {docno} </DOCNO>\n<DOCTYPE> NEWS STORY </DOCTYPE>\n<BODY>\n"
            f"<HEADLINE> Not part of the text </HEADLINE>\n<TEXT>\n{text}\n</TEXT>\n</BODY>\n</DOC>\n")


@pytest.fixture
def nist_duc(tmp_path):
    """NIST's layout: docs/<cluster>/<DOCNO> SGML files; task 1 and task 2 human summaries under eval/models."""
    root = tmp_path / "DUC2004"
    for cluster, docno, text in [
        ("d30001t", "APW19981016.0240", "Hurricane Mitch   struck\nHonduras &amp; Nicaragua on Friday."),
        ("d30001t", "NYT19981017.0100", "<P>\nRelief agencies flew in food.\n</P>\n<P>\nMore came later.\n</P>"),
        ("d30002t", "APW19981027.0241", "Pinochet was arrested in London."),
    ]:
        (root / "docs" / cluster).mkdir(parents=True, exist_ok=True)
        (root / "docs" / cluster / docno).write_text(sgml(docno, text))
    task1 = root / "eval" / "models" / "1"
    task1.mkdir(parents=True)
    (task1 / "D30001.P.10.T.B.APW19981016.0240").write_text("Second assessor's headline")
    (task1 / "D30001.P.10.T.A.APW19981016.0240").write_text("Mitch hits Honduras\n")
    task2 = root / "eval" / "models" / "2"
    task2.mkdir(parents=True)
    (task2 / "D30002.M.100.T.C").write_text("Another cluster summary.")
    (task2 / "D30002.M.100.T.A").write_text("Former dictator Pinochet is held in Britain.")
    return root


@pytest.fixture
def flat_duc(tmp_path):
    """The flattened headline set: input.txt and task1_ref0..3.txt aligned by line."""
    root = tmp_path / "duc2004-flat"
    root.mkdir()
    (root / "input.txt").write_text("schizophrenia patients whose   medication\n\nmexico 's economy grew # percent\n")
    for k in range(4):
        (root / f"task1_ref{k}.txt").write_text(f"ref{k} patients\nblank\nref{k} mexico grows\n")
    return root


def test_duc2004_nist_layout(nist_duc):
    samples = datasets.duc2004(nist_duc)
    assert [s.source_id for s in samples] == ["APW19981016.0240", "NYT19981017.0100", "APW19981027.0241"]
    assert {(s.source, s.task) for s in samples} == {("duc2004", "summarization")}
    # Only <TEXT> is the prompt: tags and entities out, whitespace normalised.
    assert samples[0].prompt == "Hurricane Mitch struck Honduras & Nicaragua on Friday."
    assert samples[1].prompt == "Relief agencies flew in food. More came later."
    # Task 1 summary of that very document, first assessor; else the cluster's task 2 summary; else none.
    assert samples[0].reference == "Mitch hits Honduras"
    assert samples[1].reference is None
    assert samples[2].reference == "Former dictator Pinochet is held in Britain."


def test_duc2004_flattened_layout(flat_duc):
    samples = datasets.duc2004(str(flat_duc))
    assert [(s.source_id, s.prompt, s.reference) for s in samples] == [
        ("0", "schizophrenia patients whose medication", "ref0 patients"),
        ("2", "mexico 's economy grew # percent", "ref0 mexico grows")]
    (flat_duc / "task1_ref0.txt").write_text("only one line\n")
    with pytest.raises(UserError, match="task1_ref0.txt has 1 lines .* aligned line by line"):
        datasets.duc2004(flat_duc)


def test_duc2004_bad_folders_name_the_path_and_the_layouts(tmp_path):
    with pytest.raises(UserError, match=f"DUC2004 folder {tmp_path / 'nowhere'} not found; expected .*input.txt"):
        datasets.duc2004(tmp_path / "nowhere")
    (tmp_path / "empty" / "docs" / "d30001t").mkdir(parents=True)
    with pytest.raises(UserError, match=f"No DUC2004 documents in {tmp_path / 'empty'}; expected NIST's layout"):
        datasets.duc2004(tmp_path / "empty")


def test_an_upload_becomes_a_self_contained_inline_source():
    data = b"question,answer,key\nWhat is 2 + 3?,5,q1\nHalf of 8?,4,q2\n"
    assert datasets.table_columns(data, "mine.csv") == ["question", "answer", "key"]
    spec = datasets.inline_source("mine.csv", datasets.from_table(data, "mine.csv", "question", task="math",
                                                                  id_column="key", gold_column="answer"))
    stored = json.loads(json.dumps(spec))  # what the database keeps
    samples = datasets.load_source(stored)
    assert [(s.source, s.source_id, s.task, s.prompt, s.gold_answer) for s in samples] == [
        ("mine.csv", "q1", "math", "What is 2 + 3?", "5"), ("mine.csv", "q2", "math", "Half of 8?", "4")]
    with pytest.raises(UserError, match="Unknown task 'poetry'"):
        datasets.from_table(data, "mine.csv", "question", task="poetry")


def test_plans_take_duc_table_and_inline_sources_with_prefixed_seeded_ids(nist_duc, tmp_path):
    table = tmp_path / "questions.jsonl"
    table.write_text("\n".join(json.dumps({"q": f"What is {i} + {i}?", "a": str(2 * i)}) for i in range(10)))
    inline = datasets.inline_source("upload.csv", [datasets.Sample("upload.csv", str(i), "chat", f"Say {i}.")
                                                   for i in range(6)])
    sources = ["builtin", {"kind": "duc2004", "path": str(nist_duc)},
               {"kind": "table", "path": str(table), "text_column": "q", "task": "math", "gold_column": "a"}, inline]
    plan = Plan.from_dict({"source": sources, "n_prompts": 2, "sample_seed": 3, "conditions": ["original"],
                           "models": [DEMO]})
    samples = sample_prompts(plan)
    assert samples == sample_prompts(plan)  # seeded
    prefixes = [s.source_id.split("/")[0] for s in samples]
    assert prefixes == ["builtin"] * 2 + ["duc2004"] * 2 + ["questions.jsonl"] * 2 + ["upload.csv"] * 2
    for sample in samples[4:6]:  # the table's rows keep their own text and gold answer
        i = int(sample.source_id.split("/")[1])
        assert sample.prompt == f"What is {i} + {i}?" and sample.gold_answer == str(2 * i)
    reseeded = sample_prompts(Plan.from_dict({**plan.to_dict(), "sample_seed": 4}))
    assert [s.source_id for s in reseeded] != [s.source_id for s in samples]
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan  # a stored plan reads back the same


@pytest.mark.parametrize("source,message", [
    ({"kind": "hf", "path": "x"}, "a dict whose kind is duc2004, table, inline; got kind 'hf'"),
    (42, "a name .* or a dict .*; got 42"),
    ({"kind": "table", "path": "q.csv"}, "A table source needs path, text_column .*; missing text_column"),
    ({"kind": "table", "path": "q.csv", "text_column": "q", "text_col": "q"}, "; unknown key\\(s\\) text_col"),
    ({"kind": "table", "path": "/no/such.csv", "text_column": "q"}, "Prompt file /no/such.csv not found"),
    ({"kind": "duc2004", "path": "/no/duc"}, "DUC2004 folder /no/duc not found; expected NIST's layout"),
    ({"kind": "inline", "name": "u.csv", "samples": []}, "needs name, samples .*; missing samples"),
    ({"kind": "inline", "name": "u.csv", "samples": [{"source_id": "1", "task": "math", "text": "hi"}]},
     "sample 0: a sample has source_id, task, prompt .*; got source_id, task, text"),
    ({"kind": "inline", "name": "u.csv", "samples": [{"source_id": "1", "task": "poem", "prompt": "hi"}]},
     "Unknown task 'poem'"),
])
def test_bad_source_specs_are_refused_with_a_reason(source, message):
    with pytest.raises(UserError, match=message):
        Plan.from_dict({"source": ["builtin", source], "conditions": ["original"], "models": [DEMO]})


def test_bad_task_table_and_duplicate_names_are_refused(tmp_path):
    table = tmp_path / "q.csv"
    table.write_text("q\nhello\n")
    spec = {"kind": "table", "path": str(table), "text_column": "q"}
    with pytest.raises(UserError, match="Unknown task 'poetry'"):
        Plan.from_dict({"source": [{**spec, "task": "poetry"}], "conditions": ["original"], "models": [DEMO]})
    with pytest.raises(UserError, match="Two prompt sources share a name"):
        Plan.from_dict({"source": [spec, {**spec, "task": "chat"}], "conditions": ["original"], "models": [DEMO]})
    with pytest.raises(UserError, match="Unknown task 'maths'"):
        Plan.from_dict({"source": [spec], "gen_length": {"maths": 64}, "conditions": ["original"], "models": [DEMO]})


def test_runs_store_the_sampler_parameters_of_every_task_and_the_reconstruction(tiny_checkpoint, db_url):
    inline = datasets.inline_source("mixed.jsonl", [
        datasets.Sample("mixed.jsonl", "m", "math", "Tom has 3 apples and buys 4 more. How many now?", "#### 7"),
        datasets.Sample("mixed.jsonl", "s", "summarization", "The council voted to build a park by the river.",
                        reference="A park is coming.")])
    plan = Plan.from_dict({
        "name": "per-task", "source": inline, "n_prompts": 2, "models": [str(tiny_checkpoint)],
        "compressors": [{"name": "random", "params": {"seed": 1}}], "ratios": [2.0],
        "conditions": ["original", "compressed", "reconstructed"], "preset": "custom",
        "sampler": {"gen_length": 16, "steps": 16, "block_length": 8},
        "gen_length": {"math": 16, "summarization": 8, "reconstruct": 32}})
    summary = Runner(find_or_create(plan, db_url), ModelPool("cpu"), db_url).run()
    assert summary["status"] == "done" and summary["outputs"] == 2 * 3
    with session_scope(db_url) as session:
        runs = {run.compressor: run.sampler_params for run in session.scalars(select(models.Run))}
        lengths = {(item.task, condition.name): len(condition.outputs[0].token_ids)
                   for item in session.scalars(select(models.Item)) for condition in item.conditions}
    assert set(runs["none"]) == {"math", "summarization"}  # the baseline run reconstructs nothing
    assert runs["none"]["math"]["gen_length"] == 16 and runs["none"]["summarization"]["gen_length"] == 8
    assert runs["none"]["summarization"]["steps"] == 8 and runs["none"]["math"]["block_length"] == 8
    assert set(runs["random"]) == {"math", "summarization", "reconstructed"}
    assert {task: p["gen_length"] for task, p in runs["random"]["reconstructed"].items()} == {
        "math": 32, "summarization": 32}
    # What is stored is what was generated with.
    assert lengths == {("math", "original"): 16, ("math", "compressed"): 16, ("math", "reconstructed"): 32,
                       ("summarization", "original"): 8, ("summarization", "compressed"): 8,
                       ("summarization", "reconstructed"): 32}


@pytest.fixture
def page_env(tiny_checkpoint, db_url, monkeypatch):
    monkeypatch.setenv("COMPRESSLENS_MODEL", str(tiny_checkpoint))
    return db_url


def widget(widgets, label):
    return next(w for w in widgets if w.label == label)


def stored_experiments(url):
    with session_scope(url) as session:
        experiments = session.scalars(select(models.Experiment).order_by(models.Experiment.id)).all()
        states = experiment_states(session, [e.id for e in experiments])
        return [(e.plan, states[e.id]["status"]) for e in experiments]


def test_experiments_page_queues_an_upload_with_per_task_settings(page_env):
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.run()
    at.multiselect[0].set_value(["builtin"])
    at.multiselect[2].set_value(["original"])
    at.number_input[0].set_value(1)
    at.file_uploader[0].set_value(("notes.csv", b"title,body,summary\nA,The river park opens in May.,Park opens.\n",
                                   "text/csv"))
    at.run()
    widget(at.selectbox, "Prompt text column").select_index(1)  # body
    widget(at.selectbox, "Task").select_index(list(datasets.TASK_INSTRUCTIONS).index("summarization"))
    widget(at.selectbox, "Reference column").select_index(1 + 2)  # after "(none)": title, body, summary
    at.run()
    # One row per task of the chosen sources, defaulting to the model's preset and the task's instruction.
    labels = [n.label for n in at.number_input if n.label.startswith("Generation length")]
    assert labels == [f"Generation length: {task}" for task in ("chat", "math", "summarization")]
    assert widget(at.number_input, "Generation length: math").value == 128  # the tiny LLaDA's preset: demo
    assert widget(at.text_area, "Instruction: summarization").value == datasets.TASK_INSTRUCTIONS["summarization"]
    at.selectbox[0].select_index(1 + list(PRESETS).index("small"))
    at.run()
    assert widget(at.number_input, "Generation length: math").value == 64  # follows the preset
    widget(at.number_input, "Generation length: summarization").set_value(32)
    widget(at.text_area, "Instruction: chat").input("Answer in one sentence.")
    widget(at.button, "Queue experiment").click()
    at.run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert at.success[0].value == "Experiment #1 queued."
    [(plan, _status)] = stored_experiments(page_env)
    assert plan["gen_length"] == {"chat": 64, "math": 64, "summarization": 32}
    assert plan["instructions"] == {"chat": "Answer in one sentence.", "math": datasets.TASK_INSTRUCTIONS["math"],
                                    "summarization": datasets.TASK_INSTRUCTIONS["summarization"]}
    builtin, upload = plan["source"]
    assert builtin == "builtin" and upload["kind"] == "inline" and upload["name"] == "notes.csv"
    assert upload["samples"] == [{"source_id": "0", "task": "summarization", "prompt": "The river park opens in May.",
                                  "gold_solution": None, "reference": "Park opens."}]
    deadline = time.monotonic() + 120
    while stored_experiments(page_env)[0][1] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert stored_experiments(page_env)[0][1] == "done"  # the worker ran it from the stored plan alone


def test_experiments_page_refuses_a_missing_duc_folder(page_env, tmp_path):
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.run()
    widget(at.text_input, "DUC2004 folder on this machine (optional)").input(str(tmp_path / "nowhere"))
    at.run()
    assert "Generation length: summarization" in [n.label for n in at.number_input]
    widget(at.button, "Queue experiment").click()
    at.run()
    assert at.error[0].value.startswith(f"DUC2004 folder {tmp_path / 'nowhere'} not found; expected NIST's layout")
    assert stored_experiments(page_env) == []


def test_missing_table_cells_are_absent_not_the_text_none():
    from core.data.datasets import from_table

    data = b'{"q": "Add 2 and 3.", "a": "5", "ref": "five"}\n{"q": "Add 1 and 1."}\n'
    first, second = from_table(data, "own.jsonl", "q", task="math", gold_column="a", reference_column="ref")
    assert (first.gold_answer, first.reference) == ("5", "five")
    assert (second.gold_solution, second.reference, second.source_id) == (None, None, "1")
