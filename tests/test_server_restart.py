"""Restarting the web server during an experiment: the run goes on (a worker process of its own) or picks up where
it stopped (the worker inside the server), with nothing lost, nothing duplicated and the database intact."""

import subprocess
import sys
import time

from sqlalchemy import text

from core.pipeline.experiments import experiment_summary, total_units
from core.pipeline.worker import job_state, submit_experiment
from db.queries import output_rows
from db.session import get_engine, session_scope
from conftest import REPO


def outputs(db_url, experiment_id) -> dict:
    with session_scope(db_url) as session:
        return {(r["run_id"], r["source_id"], r["condition"]): r["output"] for r in output_rows(session, experiment_id)}


def wait_until(condition, timeout=240, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def assert_finished_once(db_url, experiment_id, job_id, expected, before):
    after = outputs(db_url, experiment_id)
    assert job_state(db_url, job_id)["status"] == "done" and experiment_summary(db_url, experiment_id)["status"] == "done"
    assert len(after) == expected and all(after[key] == output for key, output in before.items())
    with session_scope(db_url) as session:  # one stored row per unit: the unique keys held
        assert len(output_rows(session, experiment_id)) == expected
    with get_engine(db_url).connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"


def test_a_worker_process_runs_on_while_the_web_server_restarts(dashboards, tiny_plan, tiny_checkpoint):
    server = dashboards(COMPRESSLENS_WORKER="off").start()
    plan = tiny_plan(tiny_checkpoint, n_prompts=4, batch_size=1)
    experiment_id, job_id = submit_experiment(server.db_url, plan)
    expected = total_units(plan, 4)
    worker = subprocess.Popen([sys.executable, "-m", "core", "worker", "--db", server.db_url], cwd=REPO,
                              env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(outputs(server.db_url, experiment_id)) >= 2, what="the first outputs")
        server.stop()
        down = len(outputs(server.db_url, experiment_id))
        wait_until(lambda: len(outputs(server.db_url, experiment_id)) > down, what="outputs while the server is down")
        server.start()
        before = outputs(server.db_url, experiment_id)
        wait_until(lambda: job_state(server.db_url, job_id)["status"] == "done", what="the experiment to finish")
    finally:
        worker.terminate()
        worker.wait(10)
    assert_finished_once(server.db_url, experiment_id, job_id, expected, before)


def test_the_worker_inside_the_web_server_resumes_the_run_after_a_restart(browser, dashboards, tiny_plan,
                                                                          tiny_checkpoint):
    server = dashboards().start()
    plan = tiny_plan(tiny_checkpoint, n_prompts=4, batch_size=1)
    experiment_id, job_id = submit_experiment(server.db_url, plan)
    expected = total_units(plan, 4)
    page = browser.new_page()
    page.goto(server.url)  # the first page view starts the server's worker
    wait_until(lambda: len(outputs(server.db_url, experiment_id)) >= 2, what="the first outputs")
    server.stop()
    before = outputs(server.db_url, experiment_id)
    assert 2 <= len(before) < expected and job_state(server.db_url, job_id)["status"] == "running"

    server.start()
    page.goto(server.url)
    wait_until(lambda: job_state(server.db_url, job_id)["status"] == "done", what="the experiment to finish")
    assert_finished_once(server.db_url, experiment_id, job_id, expected, before)
