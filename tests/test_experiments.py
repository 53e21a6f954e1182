import csv
import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from core.__main__ import main
from core.errors import UserError
from core.pipeline.experiments import (NO_COMPRESSION, STUDY_CONDITIONS, Plan, Runner, cancel, expand, experiment_summary,
                              find_or_create, total_units)
from core.pipeline.service import ModelPool
from core.pipeline.worker import Worker, job_state, submit_experiment
from db import models
from db.queries import OUTPUT_COLUMNS
from db.session import session_scope

REPO = Path(__file__).resolve().parents[1]


def output_rows(url):
    with session_scope(url) as session:
        return session.execute(
            select(models.Output.id, models.Item.source_id, models.Condition.name, models.Run.config_key,
                   models.Output.text)
            .join(models.Condition, models.Condition.id == models.Output.condition_id)
            .join(models.Item, models.Item.id == models.Condition.item_id)
            .join(models.Run, models.Run.id == models.Item.run_id)).all()


def test_plan_expansion(tiny_plan, tiny_checkpoint):
    plan = tiny_plan(tiny_checkpoint, seeds=[0, 1], compressors=[{"name": "random"}, {"name": "truncate"}])
    configs = expand(plan)
    # Per seed: one baseline, then 2 compressors x 2 ratios, each with the three compressed conditions.
    assert len(configs) == 2 * (1 + 4)
    assert configs[0].compressor == NO_COMPRESSION and configs[0].conditions == ("original",)
    assert configs[1].conditions == STUDY_CONDITIONS[1:]
    assert len({c.key for c in configs}) == len(configs)
    assert total_units(plan, 3) == 3 * 2 * (1 + 4 * 3)
    only = tiny_plan(tiny_checkpoint, conditions=["original", "compressed"])
    assert total_units(only, 3) == 3 * (1 + 2)


@pytest.mark.parametrize("change,message", [
    ({"conditions": ["original", "sideways"]}, "Conditions must be among"),
    ({"conditions": ["reasoning_on_reconstructed"]}, "needs the reconstructed condition"),
    ({"ratios": [0.5]}, r"ratio must be in \(1, 20\]"),
    ({"compressors": [{"name": "zip"}]}, "Unknown compressor"),
    ({"source": "imdb"}, "Unknown prompt source"),
    ({"sampler": {"block_length": 7}}, "not a multiple"),
    ({"speed": "max"}, "Unknown plan key"),
])
def test_bad_plans_are_refused(tiny_plan, tiny_checkpoint, change, message):
    with pytest.raises(UserError, match=message):
        tiny_plan(tiny_checkpoint, **change)


def test_experiment_runs_every_condition_and_scores_it(tiny_plan, tiny_checkpoint, db_url):
    plan = tiny_plan(tiny_checkpoint)
    experiment_id = find_or_create(plan, db_url)
    assert find_or_create(plan, db_url) == experiment_id  # the same plan is the same experiment
    messages = []
    summary = Runner(experiment_id, ModelPool("cpu"), db_url, lambda f, m: messages.append(m)).run()
    assert summary["status"] == "done" and summary["outputs"] == summary["total_units"] == 3 * (1 + 2 * 3)
    assert "tokens/s" in messages[-1] and messages[-1].startswith("21/21")
    rows = output_rows(db_url)
    assert len(rows) == 21 and len({(r.source_id, r.name, r.config_key) for r in rows}) == 21
    table = {(r["compressor"], r["ratio"], r["condition"], r["reference"], r["metric"]): r for r in summary["table"]}
    assert ("none", 1.0, "original", "gold", "exact_match") in table
    assert ("random", 3.0, "compressed", "original_output", "bertscore_r") in table
    assert ("random", 1.5, "reconstructed", "original_prompt", "rougeL") in table
    assert ("random", 1.5, "reasoning_on_reconstructed", "gold", "exact_match") in table
    with session_scope(db_url) as session:
        compressed = session.scalars(select(models.Condition).where(models.Condition.name == "compressed")).all()
        assert all(c.words and c.ratio_achieved > 1 for c in compressed)
        reconstructed = session.scalars(select(models.Condition).where(models.Condition.name == "reconstructed")).first()
        assert reconstructed.prompt_text.startswith("The following text was compressed")
        # The one write path records a condition's GPT-4 token count whoever ran it, as a Playground run does.
        counts = session.scalars(select(models.Condition.prompt_tokens_cl100k)).all()
        assert len(counts) == 21 and all(isinstance(n, int) and n > 0 for n in counts)
    # Running a finished plan again changes nothing.
    again = Runner(experiment_id, ModelPool("cpu"), db_url).run()
    assert again["outputs"] == 21 and output_rows(db_url) == rows


def test_export_csv_and_jsonl(tiny_plan, tiny_checkpoint, db_url, capsys):
    plan = tiny_plan(tiny_checkpoint, ratios=[2.0], conditions=["original", "compressed"])
    experiment_id = find_or_create(plan, db_url)
    Runner(experiment_id, ModelPool("cpu"), db_url).run()
    assert main(["export", "--experiment", str(experiment_id), "--format", "jsonl", "--db", db_url]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 6 and {r["condition"] for r in lines} == {"original", "compressed"}
    assert all(list(r)[:len(OUTPUT_COLUMNS)] == list(OUTPUT_COLUMNS) for r in lines)
    assert all("exact_match@gold" in r for r in lines)
    assert main(["export", "--experiment", str(experiment_id), "--format", "csv", "--db", db_url]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["output"] for r in table] == [r["output"] for r in lines]
    assert main(["export", "--experiment", "99", "--db", db_url]) == 2
    assert "No experiment #99" in capsys.readouterr().err


@pytest.mark.sqlite_only
def test_killed_experiment_resumes_without_duplicates_or_losses(tiny_plan, tiny_checkpoint, db_url, tmp_path):
    plan = tiny_plan(tiny_checkpoint, n_prompts=4, batch_size=1)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan.to_dict()))
    command = [sys.executable, "-m", "core", "experiment", "--plan", str(plan_file), "--db", db_url, "--json"]
    env = {**os.environ, "COMPRESSLENS_DB_URL": db_url}
    expected = total_units(plan, 4)
    kill_after = random.Random(os.getpid()).randint(2, expected - 3)
    worker = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and worker.poll() is None:
        try:
            if len(output_rows(db_url)) >= kill_after:
                break
        except Exception:
            pass  # the schema may not exist yet
        time.sleep(0.05)
    worker.kill()
    worker.wait()
    before = {(r.source_id, r.name, r.config_key): (r.id, r.text) for r in output_rows(db_url)}
    assert kill_after <= len(before) < expected

    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout)
    after = {(r.source_id, r.name, r.config_key): (r.id, r.text) for r in output_rows(db_url)}
    assert summary["status"] == "done" and len(after) == expected == summary["outputs"]
    assert all(after[key] == value for key, value in before.items())  # nothing rewritten, nothing lost
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count(models.Experiment.id))) == 1
        if db_url.startswith("sqlite"):
            assert session.execute(text("PRAGMA integrity_check")).scalar() == "ok"


def test_cancel_stops_between_batches_and_a_rerun_finishes(tiny_plan, tiny_checkpoint, db_url):
    plan = tiny_plan(tiny_checkpoint)
    experiment_id, job_id = submit_experiment(db_url, plan)
    worker = Worker(db_url, ModelPool("cpu"), echo=lambda f, m: cancel(db_url, experiment_id))
    assert worker.run_once()
    summary = experiment_summary(db_url, experiment_id)
    assert summary["status"] == "cancelled" and 0 < summary["outputs"] < summary["total_units"]
    assert not worker.run_once() and job_state(db_url, job_id)["status"] == "cancelled"  # stays cancelled
    assert submit_experiment(db_url, plan) == (experiment_id, job_id + 1)  # submitting the plan again reopens it
    assert Worker(db_url, ModelPool("cpu")).run_once()
    resumed = experiment_summary(db_url, experiment_id)
    assert resumed["status"] == "done" and resumed["outputs"] == resumed["total_units"]
    assert submit_experiment(db_url, plan) == (experiment_id, job_id + 2)  # a finished one reruns as a new job
    cancel(db_url, experiment_id)
    assert not Worker(db_url, ModelPool("cpu")).run_once()  # a job cancelled in the queue never starts


def test_an_experiment_queued_twice_keeps_one_job(tiny_plan, tiny_checkpoint, db_url):
    plan = tiny_plan(tiny_checkpoint)
    assert submit_experiment(db_url, plan) == submit_experiment(db_url, plan) == (1, 1)


@pytest.mark.slow
def test_study_shape_on_the_demo_model(tmp_path):
    """The 20-prompt study's shape (GSM8K x 2 ratios x the four conditions) end to end on the shipped demo
    model, on 4 prompts; the 20-prompt run and its wall time are bench/experiment_wall.py's. On SQLite only: the
    shape does not depend on the database, which the other tests here run on both backends."""
    db_url = f"sqlite:///{tmp_path / 'study.db'}"
    n = 4
    plan = Plan.from_dict({"name": "gsm8k-study-shape", "source": "gsm8k", "n_prompts": n, "ratios": [1.5, 2.0],
                           "compressors": [{"name": "random", "params": {"seed": 0}}],
                           "models": ["compresslens/math-demo"], "batch_size": n, "gen_length": {"math": 32}})
    summary = Runner(find_or_create(plan, db_url), ModelPool("cpu"), db_url).run()
    assert summary["status"] == "done" and summary["outputs"] == n * (1 + 2 * 3) == summary["total_units"]
    cells = {(r["ratio"], r["condition"], r["reference"], r["metric"]): r["n"] for r in summary["table"]}
    for ratio in (1.5, 2.0):
        assert cells[(ratio, "compressed", "gold", "exact_match")] == n
        assert cells[(ratio, "reconstructed", "original_prompt", "bertscore_f1")] == n
        assert cells[(ratio, "reasoning_on_reconstructed", "original_output", "bleu")] == n


def test_several_sources_and_the_published_study_preset():
    from core.pipeline.experiments import published_study, sample_prompts

    plan = Plan.from_dict({"source": ["gsm8k", "cnndm", "sharegpt"], "n_prompts": 4, "compressors": [],
                           "conditions": ["original"], "models": ["compresslens/math-demo"]})
    samples = sample_prompts(plan)
    assert len(samples) == 12 and len({s.source_id for s in samples}) == 12
    assert {s.task for s in samples} == {"math", "summarization", "chat"}
    assert samples == sample_prompts(plan)
    study = published_study("GSAI-ML/LLaDA-8B-Instruct")
    assert study.sources() == ["gsm8k", "cnndm", "sharegpt"] and study.n_prompts == 250 and study.ratios == [2.0]
    assert tuple(study.conditions) == STUDY_CONDITIONS and study.compressors[0]["name"] == "llmlingua2"
    assert total_units(study, 750) == 750 * (1 + 3)


def test_a_plan_on_another_backend_is_the_same_experiment_and_runs_there_next(tiny_plan, tiny_checkpoint, db_url):
    from dataclasses import replace

    plan = tiny_plan(tiny_checkpoint)
    experiment_id = find_or_create(plan, db_url)
    assert find_or_create(replace(plan, backend="ray", actors=4), db_url) == experiment_id
    with session_scope(db_url) as session:
        stored = session.get(models.Experiment, experiment_id).plan
    assert (stored["backend"], stored["actors"]) == ("ray", 4)
    assert find_or_create(replace(plan, n_prompts=2, backend="ray"), db_url) != experiment_id  # what it is differs
    with pytest.raises(UserError, match="backend must be one of local, ray"):
        replace(plan, backend="slurm").validate()
