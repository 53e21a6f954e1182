import time
from html import escape
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.data.datasets import SOURCES, TASK_INSTRUCTIONS
from core.llada.sampler import PRESETS
from core.pipeline.compressors import REGISTRY
from core.pipeline.worker import job_state
from core.render import md_escape
from db.models import Experiment, Job
from db.queries import experiment_states, run_count
from db.migrations import MIGRATIONS
from db.session import session_scope

PAGES = Path(__file__).resolve().parents[1] / "pages"
APP = Path(__file__).resolve().parents[1] / "app.py"
HOSTILE = "<script>alert('x')</script><b>Tom</b> has $3 and $5. How many dollars does Tom have?"


@pytest.fixture
def page_env(tiny_checkpoint, db_url, monkeypatch):
    monkeypatch.setenv("COMPRESSLENS_MODEL", str(tiny_checkpoint))
    return db_url


def counts(url):
    with session_scope(url) as session:
        return run_count(session), session.query(Job).count()


def wait_for_job(url, job_id, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(url, job_id)
        if state["status"] in ("done", "failed"):
            return state
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish: {state}")


def html_bodies(at):
    return [element.proto.body for element in at.get("html")]


def playground(prompt, compressor="random", ratio=None):
    at = AppTest.from_file(str(PAGES / "playground.py"), default_timeout=120)
    at.run()
    at.text_area(key="prompt").input(prompt)
    at.selectbox[1].select_index(list(REGISTRY).index(compressor))
    if ratio is not None:
        at.number_input[1].set_value(ratio)
    at.run()
    next(b for b in at.button if b.label == "Run").click()
    at.run()
    return at


def test_playground_run_end_to_end(page_env):
    assert counts(page_env) == (0, 0)
    at = playground(HOSTILE)
    assert not at.exception and not at.error
    state = wait_for_job(page_env, at.session_state["job_id"])
    assert state["status"] == "done", state
    at.run()
    assert not at.exception
    assert counts(page_env) == (1, 1)

    from pages.shared import load_view

    view = load_view(state["run_id"])
    bodies = html_bodies(at)
    everything = "\n".join(bodies)
    # Both prompts and both outputs are on the page, escaped; no live tag from the prompt.
    assert "<script>alert" not in everything and "<b>Tom</b>" not in everything
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in everything

    for text in (view["original_output"], view["compressed_output"], view["compressed_prompt"]):
        assert escape(text) in everything
    assert any('class="cl-drop"' in b for b in bodies)  # dropped prompt words marked
    assert any(('class="cl-ins"' in b or 'class="cl-del"' in b) or view["original_output"] == view["compressed_output"]
               for b in bodies)
    assert [s.value for s in at.subheader][:4] == ["Original prompt", "Compressed prompt (random)",
                                                   "Output on the original prompt", "Output on the compressed prompt"]
    assert "Word-level diff of the outputs" in [s.value for s in at.subheader]
    table = at.dataframe[0].value
    assert "BLEU" in table.index and "BERTScore R" in table.index
    assert table.loc["ROUGE-L", "compressed output vs original output"] == pytest.approx(
        view["metrics"]["compressed"]["original_output"]["rougeL"])
    assert at.success[0].value == f"Run #{view['run_id']} saved."


def test_the_side_by_side_view_replays_both_trajectories_and_diffs_by_tokens(page_env):
    from core.render import canvas_html, token_diff_html, until_end
    from pages.shared import load_view

    at = playground(HOSTILE)
    state = wait_for_job(page_env, at.session_state["job_id"])
    at.run()
    view = load_view(state["run_id"])
    trajectories = view["trajectories"]
    assert "How the answers settled, step by step" in [s.value for s in at.subheader]
    slider = at.slider(key=f"trajectory-step-{view['run_id']}")
    assert slider.value == 128  # the demo preset: 128 steps, one token each
    assert canvas_html(trajectories["compressed"], 128) in html_bodies(at)
    slider.set_value(10).run()
    canvases = [b for b in html_bodies(at) if "still masked" in b]
    assert [b.count('title="step ') for b in canvases] == [10, 10]
    assert [b.count("outline:") for b in canvases] == [1, 1]  # the token committed at step 10
    assert "<script>" not in "".join(canvases)
    compute = view["compute"]
    assert "Compute" in [s.value for s in at.subheader]
    saved = 1 - compute["compressed"]["tokens_processed"] / compute["original"]["tokens_processed"]
    assert any(c.value.startswith(f"The compressed prompt saved {saved:.0%}") for c in at.caption) and saved > 0
    at.toggle(key=f"token-diff-{view['run_id']}").set_value(True).run()
    assert token_diff_html(until_end(trajectories["original"]["piece"]),
                           until_end(trajectories["compressed"]["piece"])) in html_bodies(at)


def test_playground_compresses_with_the_target_models_own_confidence(page_env):
    at = playground("A baker made 48 muffins and 36 more. She sold 52 of them. How many muffins are left now?",
                    compressor="dllm_confidence")
    assert [c.value for c in at.checkbox if c.label == "Keep every word with a digit"] == [True]
    state = wait_for_job(page_env, at.session_state["job_id"])
    assert state["status"] == "done", state
    at.run()
    assert any("1 forward passes of the model it asked" in c.value for c in at.caption)


def test_playground_reconstructs_by_instruction_and_by_infill_side_by_side(page_env):
    from core.pipeline import infill
    from core.render import reconstruction_html
    from pages.shared import load_view

    at = AppTest.from_file(str(PAGES / "playground.py"), default_timeout=120)
    at.run()
    at.text_area(key="prompt").input(HOSTILE)
    at.selectbox[1].select_index(list(REGISTRY).index("random"))
    at.multiselect[0].set_value(["reconstructed", "infilled", "reasoning_on_infilled"])
    at.run()
    at.radio[0].set_value("fixed")
    at.run()
    next(b for b in at.button if b.label == "Run").click()
    at.run()
    state = wait_for_job(page_env, at.session_state["job_id"])
    assert state["status"] == "done", state
    at.run()
    assert not at.exception and not at.error
    view = load_view(state["run_id"])
    others = {c["name"]: c for c in view["other_conditions"]}
    assert others["infilled"]["prompt"].count(infill.MASK_SHOWN) == 2 * sum(
        1 for s in infill.segments(view["words"]) if not s.kept)
    bodies = html_bodies(at)
    for rebuilt in ("reconstructed", "infilled"):  # each coloured by its own restored words, escaped
        assert reconstruction_html(infill.marked(view["words"], others[rebuilt]["output"])) in bodies
    assert "<script>alert" not in "\n".join(bodies)
    headers = [s.value for s in at.subheader]
    assert "Reconstructions of the original prompt" in headers and "Output on the infilled prompt" in headers


def test_playground_rejects_bad_input_without_storing(page_env, monkeypatch):
    at = playground("   ")
    assert at.error[0].value == "The prompt is empty: paste a prompt or sample one."
    at = playground("Count the apples.", ratio=0.5)
    assert "ratio must be in (1, 20]" in at.error[0].value
    assert counts(page_env) == (0, 0)

    monkeypatch.setenv("COMPRESSLENS_MODEL", "/nowhere/llada")
    at = playground("Count the apples.")
    state = wait_for_job(page_env, at.session_state["job_id"])
    at.run()
    assert state["status"] == "failed" and at.error[0].value == "Model directory not found: /nowhere/llada"
    assert counts(page_env) == (0, 1)


def test_sampling_a_gsm8k_prompt_carries_its_gold_answer(page_env, gsm8k_questions):
    at = AppTest.from_file(str(PAGES / "playground.py"), default_timeout=60)
    at.run()
    at.selectbox[0].select_index(list(SOURCES).index("gsm8k"))
    at.number_input[0].set_value(4)
    next(b for b in at.button if b.label == "Sample").click()
    at.run()
    prompt = at.text_area(key="prompt").value
    match = next(q for q in gsm8k_questions if prompt == f"{TASK_INSTRUCTIONS['math']}\n\n{q['question']}")
    gold = match["answer"].split("####")[-1].strip().replace(",", "")
    assert any(f"gold answer {gold}" in c.value for c in at.caption)


def test_history_lists_and_reopens_runs(page_env):
    at = AppTest.from_file(str(PAGES / "history.py"), default_timeout=60)
    at.run()
    assert at.info[0].value.startswith("No stored runs yet")

    run = playground("A shop sells 4 pens for $2. How much do 10 pens cost?")
    assert wait_for_job(page_env, run.session_state["job_id"])["status"] == "done"

    at = AppTest.from_file(str(PAGES / "history.py"), default_timeout=60)
    at.run()
    assert not at.exception
    assert list(at.dataframe[0].value.index) == [1]
    assert at.selectbox[-1].value == 1
    assert "Output on the compressed prompt" in [s.value for s in at.subheader]
    from pages.shared import load_view

    view = load_view(1)
    assert view["original_prompt"] == "A shop sells 4 pens for $2. How much do 10 pens cost?"
    assert any(view["compressed_prompt"] in b for b in html_bodies(at))
    assert any(escape(view["compressed_output"]) in b for b in html_bodies(at))


def test_with_the_server_worker_off_jobs_wait_for_a_worker_process_and_the_sidebar_says_so(page_env, monkeypatch):
    from core.pipeline.service import CompareRequest
    from core.pipeline.worker import Worker, submit_compare

    monkeypatch.setenv("COMPRESSLENS_WORKER", "off")
    job_id = submit_compare(page_env, CompareRequest(prompt="Tom has 3 apples.", compressor="random"))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert "Worker: none in this server (COMPRESSLENS_WORKER=off)" in sidebar
    time.sleep(1.0)
    assert job_state(page_env, job_id)["status"] == "queued"
    assert Worker(page_env).run_once() and job_state(page_env, job_id)["status"] == "done"


def test_app_shell_shows_device_database_and_pages(page_env):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert "CPU only" in sidebar and md_escape(page_env) in sidebar and f"schema v{MIGRATIONS[-1][0]}" in sidebar
    assert at.title[0].value == "Playground"


def test_a_database_or_worker_setting_that_cannot_work_is_said_in_the_page(page_env, monkeypatch):
    monkeypatch.setenv("COMPRESSLENS_DB_URL", "postgresql://me:secret@127.0.0.1:1/nodb")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception
    assert at.error[0].value.startswith(md_escape("Cannot open the database at postgresql+psycopg://me:***@"))
    assert "secret" not in at.error[0].value
    monkeypatch.setenv("COMPRESSLENS_DB_URL", page_env)
    monkeypatch.setenv("COMPRESSLENS_WORKER", "sometimes")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception and md_escape("COMPRESSLENS_WORKER is 'sometimes'") in at.error[0].value


def test_offline_default_is_the_smollm2_diffusion_model_and_the_page_says_so(db_url, monkeypatch):
    monkeypatch.delenv("COMPRESSLENS_MODEL", raising=False)
    at = AppTest.from_file(str(PAGES / "playground.py"), default_timeout=180)
    at.run()
    model_box = next(t for t in at.text_input if t.label.startswith("Model"))
    assert model_box.value == "compresslens/smollm2-diffusion"
    # A shipped model is said to be CompressLens's own, not given LLaDA-8B's card.
    assert not any(e.label.startswith("Model card") for e in at.expander)
    assert any(c.value.startswith("One of CompressLens's own small models") for c in at.caption)
    assert at.selectbox[0].value == "wordproblems"  # the default source: word problems it never trained on
    at.number_input[0].set_value(6)  # a problem it answers (of about nine in ten)
    next(b for b in at.button if b.label == "Sample").click()
    at.run()
    assert at.session_state["prompt"].startswith(TASK_INSTRUCTIONS["math"])
    next(b for b in at.button if b.label == "Run").click()
    at.run()
    state = wait_for_job(db_url, at.session_state["job_id"])
    at.run()
    assert state["status"] == "done", state
    warnings = [w.value for w in at.warning]
    assert warnings[0].startswith("Sampler: fast, APPROXIMATE (dual cache, threshold 0.95, EOS early stop)")
    assert any(w.startswith("SmolLM2 diffusion model: SmolLM2-135M-Instruct (135M parameters) converted by "
                            "CompressLens") and "far below LLaDA-8B's level" in w for w in warnings)
    verdicts = [t.value for t in at.text if t.value.startswith("Extracted answer")]
    assert verdicts[0].endswith("(correct)")  # the original prompt is answered right


def test_experiments_page_queues_a_plan_and_follows_it(page_env, tiny_checkpoint):
    at = AppTest.from_file(str(PAGES / "experiments.py"), default_timeout=120)
    at.run()
    assert at.info[0].value == "No experiments yet."
    at.text_input[0].input("page study")
    at.text_input[1].input("1.5, 3")
    at.number_input[0].set_value(2)
    at.text_area[0].input(str(tiny_checkpoint))
    at.selectbox[0].select_index(1 + list(PRESETS).index("small"))
    at.button[0].click()  # the form's submit button
    at.run()
    assert not at.exception, at.exception
    assert at.success[0].value == "Experiment #1 queued."
    with session_scope(page_env) as session:
        experiment = session.get(Experiment, 1)
        assert experiment.plan["ratios"] == [1.5, 3.0] and experiment.plan["n_prompts"] == 2
        assert (experiment.plan["backend"], experiment.plan["actors"]) == ("local", 0)  # Ray only when asked
        assert experiment.total_units == 2 * (1 + 2 * 3)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with session_scope(page_env) as session:
            if experiment_states(session, [1])[1]["status"] == "done":
                break
        time.sleep(0.5)
    at.run()
    assert at.dataframe[0].value.loc[1, "status"] == "done" and at.dataframe[0].value.loc[1, "done"] == 14

    at.text_input[1].input("one, two")
    at.button[0].click()
    at.run()
    assert at.error[0].value == "Not a list of numbers: 'one, two'"


def test_results_page_shows_when_answers_were_committed(tiny_plan, page_env, tiny_checkpoint):
    """The tiny model writes no numbers, so its stored outputs are given answers and trajectories: on the
    original prompts "42" settles at steps 2 and 1 of 5 and is right; on the compressed, at 4 and 5, wrong."""
    from core.pipeline.experiments import Runner, find_or_create
    from core.pipeline.service import ModelPool
    from db import models

    experiment_id = find_or_create(tiny_plan(tiny_checkpoint, conditions=["original", "compressed"]), page_env)
    Runner(experiment_id, ModelPool("cpu"), page_env).run()
    pieces = [" The", " answer", " is", " 4", "2"]
    with session_scope(page_env) as session:
        for output in session.query(models.Output):
            original = output.condition.name == "original"
            output.extracted_answer = "42"
            output.trajectory = {"piece": pieces, "prob": [0.9] * 5,
                                 "step": [5, 4, 3, 2, 1] if original else [1, 2, 3, 4, 5]}
            for metric in output.metrics:
                if (metric.name, metric.reference) == ("exact_match", "gold"):
                    metric.value = 1.0 if original else 0.0
    at = AppTest.from_file(str(PAGES / "results.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if ("commit_step_share", "mean") in d.value.columns)
    assert table.loc[("original", "right"), ("commit_step_share", "mean")] == pytest.approx(1.5 / 5)
    assert table.loc[("compressed", "wrong"), ("commit_step_share", "mean")] == pytest.approx(4.5 / 5)
    assert table.loc[("compressed", "wrong"), ("commit_step_share", "count")] == 3 * 2  # 3 prompts x 2 ratios


def test_results_page_shows_curves_tables_and_tests(tiny_plan, page_env, tiny_checkpoint):
    from core.pipeline.experiments import Runner, find_or_create
    from core.pipeline.service import ModelPool
    
    at = AppTest.from_file(str(PAGES / "results.py"), default_timeout=120)
    at.run()
    assert at.info[0].value.startswith("No experiments yet")
    experiment_id = find_or_create(tiny_plan(tiny_checkpoint), page_env)
    Runner(experiment_id, ModelPool("cpu"), page_env).run()
    at = AppTest.from_file(str(PAGES / "results.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    frames = [d.value for d in at.dataframe]
    curve, study, rebuilt = frames[:3]
    significance = next(f for f in frames if "test" in f)
    compute = next(f for f in frames if "compute_saved" in f)
    # The compressed prompts are shorter, so each saved part of the baseline's token positions.
    assert compute["compute_saved"].between(0, 1).all() and set(compute["sampler"]) == {"reference"}
    assert sorted(curve["ratio"].unique()) == [1.0, 1.5, 3.0] and (curve["low"] <= curve["high"]).all()
    assert ("original", "math") in study.index
    assert set(rebuilt.index.get_level_values("condition")) == {"reconstructed"}
    assert rebuilt["dropped_words_restored"].between(0, 1).all() and "accuracy answering it" in rebuilt
    assert set(significance["test"]) >= {"McNemar (exact)"}
    assert len(at.get("download_button")) >= 4
