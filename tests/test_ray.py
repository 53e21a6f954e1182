"""The Ray backend on a local Ray of two CPU actors and the demo model: the single worker's outputs, unit for
unit; cancel; a killed actor's unit run again; a killed coordinator resumed on the other backend."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

ray = pytest.importorskip("ray")

from core.generation.demo import DEMO_ID  # noqa: E402
from core.pipeline.backends import Cancelled, LocalBackend, RayBackend  # noqa: E402
from core.pipeline.experiments import Runner, find_or_create, total_units  # noqa: E402
from core.pipeline.service import ModelPool  # noqa: E402
from core.pipeline.worker import Worker, job_state, submit_experiment  # noqa: E402
from db import models  # noqa: E402
from db.session import session_scope  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


PLAN = dict(source="mathgen", n_prompts=6, batch_size=2, ratios=[2.0], conditions=["original", "compressed"],
            sampler={"gen_length": 16, "steps": 16, "block_length": 8})


@pytest.fixture(scope="module")
def pool():
    return ModelPool("cpu")


def outputs(db_url: str) -> dict:
    """Every stored output by its unique key, (run's config, condition, prompt) -> text; none stored twice."""
    with session_scope(db_url) as session:
        rows = session.execute(
            select(models.Run.config_key, models.Condition.name, models.Item.source_id, models.Output.text)
            .join(models.Condition, models.Condition.id == models.Output.condition_id)
            .join(models.Item, models.Item.id == models.Condition.item_id)
            .join(models.Run, models.Run.id == models.Item.run_id)).all()
    stored = {(key, condition, source): text for key, condition, source, text in rows}
    assert len(stored) == len(rows), "an output stored twice"
    return stored


@pytest.fixture(scope="module")
def single_worker(tiny_plan, pool, tmp_path_factory):
    """What the single worker stores for the plan: the outputs every Ray run must store too."""
    db = f"sqlite:///{tmp_path_factory.mktemp('single') / 'single.db'}"
    plan = tiny_plan(DEMO_ID, name="single worker", **PLAN)
    Runner(find_or_create(plan, db), pool, db, backend=LocalBackend(pool)).run()
    stored = outputs(db)
    assert len(stored) == total_units(plan, 6)
    return stored


def test_a_killed_coordinator_resumes_and_a_run_may_mix_backends(tiny_plan, single_worker, db_url, tmp_path, pool):
    """Killed mid-run on Ray (its own Ray on this machine, started by the CLI), resumed on the worker's own
    process: the same experiment, finished, nothing rewritten, nothing stored twice."""
    plan = tiny_plan(DEMO_ID, name="coordinator", **PLAN)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan.to_dict()))
    command = [sys.executable, "-m", "core", "experiment", "--plan", str(plan_file), "--db", db_url, "--json",
               "--backend", "ray", "--actors", "2"]
    coordinator = subprocess.Popen(command, cwd=REPO, env={**os.environ, "COMPRESSLENS_DB_URL": db_url},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and coordinator.poll() is None:
        try:
            if outputs(db_url):
                break
        except Exception:
            pass  # the schema may not exist yet
        time.sleep(0.1)
    coordinator.kill()
    coordinator.wait()
    before = outputs(db_url)
    assert 0 < len(before) < len(single_worker)
    experiment_id, job_id = submit_experiment(db_url, plan)
    worker = Worker(db_url, pool)
    worker.requeue_interrupted()  # the killed coordinator's job, on this host
    assert worker.run_once() and job_state(db_url, job_id)["status"] == "done"
    after = outputs(db_url)
    assert after == single_worker and all(after[k] == v for k, v in before.items())


@pytest.fixture(scope="module")
def actors():
    backend = RayBackend(actors=2)
    yield backend
    backend.shutdown()
    ray.shutdown()


def test_ray_actors_store_what_the_single_worker_stores(tiny_plan, single_worker, db_url, actors, pool):
    reports = []
    runner = Runner(find_or_create(tiny_plan(DEMO_ID, name="ray", **PLAN), db_url), pool, db_url,
                    progress=lambda fraction, message: reports.append((fraction, message)), backend=actors)
    runner.run()
    assert outputs(db_url) == single_worker
    assert sorted(runner.batches_by_actor) == [0, 1]  # both actors generated
    # The progress line adds the actors up: every batch counted once, the last report at 100%.
    counts = re.search(r"Ray, 2 actors \((\d+)/(\d+) batches\)", reports[-1][1]).groups()
    assert sum(map(int, counts)) == len(reports) and reports[-1][0] == 1.0


def test_cancel_stops_handing_out_units_and_a_rerun_finishes(tiny_plan, single_worker, db_url, actors, pool):
    experiment_id = find_or_create(tiny_plan(DEMO_ID, name="cancelled", **PLAN), db_url)
    reports = []
    runner = Runner(experiment_id, pool, db_url, progress=lambda f, m: reports.append(m),
                    cancelled=lambda: bool(reports), backend=actors)
    with pytest.raises(Cancelled):
        runner.run()
    stored = outputs(db_url)
    assert 0 < len(stored) <= 2 * PLAN["batch_size"]  # the units running when it was cancelled, no more
    Runner(experiment_id, pool, db_url, backend=actors).run()
    assert outputs(db_url) == single_worker


def test_a_killed_actor_is_restarted_and_its_unit_runs_again(tiny_plan, single_worker, db_url, actors, pool):
    victim, killed = actors.pids()[0], []

    def kill_once(_fraction, _message):
        if not killed:
            os.kill(victim, signal.SIGKILL)  # mid-run: a unit is in flight on it, or the next one will be
            killed.append(victim)

    Runner(find_or_create(tiny_plan(DEMO_ID, name="killed actor", **PLAN), db_url), pool, db_url,
           progress=kill_once, backend=actors).run()
    assert victim not in actors.pids()  # Ray started a new process in its place
    assert outputs(db_url) == single_worker


def test_an_actor_that_runs_out_of_memory_halves_its_batch_and_says_so_in_the_progress_line(
        tiny_plan, single_worker, db_url, pool, monkeypatch):
    """The halving happens inside each actor's generator; what it says travels with the unit's result to the
    coordinator's progress line. Here an actor object is run in this process, its GPU playing short of memory."""
    import torch

    from core.generation.generator import LLaDAGenerator
    from core.pipeline.backends import Done, GenerationActor

    real = LLaDAGenerator._generate

    def small_gpu(self, encoded, *args):
        if len(encoded) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, encoded, *args)

    monkeypatch.setattr(LLaDAGenerator, "_generate", small_gpu)
    actor = GenerationActor()

    class InProcess(LocalBackend):
        name, actors = "ray", 1

        def run(self, units, cancelled):
            for unit in units:
                generations, notes, _pid = actor.generate(unit)
                yield Done(unit, generations, notes, 0)

    reports = []
    Runner(find_or_create(tiny_plan(DEMO_ID, name="halved", **PLAN), db_url), pool, db_url,
           progress=lambda fraction, message: reports.append(message), backend=InProcess(pool)).run()
    assert outputs(db_url) == single_worker  # a batch of one gives the batch's outputs
    assert all(m.endswith("GPU out of memory at batch 2: going on at batch 1") for m in reports)
    assert all("Ray, 1 actors (" in m for m in reports)
