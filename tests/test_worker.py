import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from core.errors import UserError
from core.pipeline import worker as worker_module
from core.pipeline.service import CompareRequest, ModelPool
from core.pipeline.worker import Worker, job_state, submit_compare
from db.models import Job, utcnow
from db.queries import run_count
from db.session import session_scope

PROMPT = "A shop sells 4 pens for $2. How much do 10 pens cost?"


def request(model, **kw):
    return CompareRequest(prompt=PROMPT, compressor="random", model=str(model), preset="custom",
                          sampler={"gen_length": 16, "steps": 16, "block_length": 8}, **kw)


def test_job_reports_each_stage_and_stores_one_run(tiny_checkpoint, db_url, monkeypatch):
    monkeypatch.setattr(worker_module, "PROGRESS_INTERVAL_S", 0.0)
    worker = Worker(db_url, ModelPool("cpu"))
    seen = []
    original_set = worker._set
    monkeypatch.setattr(worker, "_set", lambda job_id, **values: (seen.append(values), original_set(job_id, **values)))
    job_id = submit_compare(db_url, request(tiny_checkpoint))
    assert job_state(db_url, job_id)["status"] == "queued"
    assert worker.run_once() and not worker.run_once()  # one job, then an empty queue

    state = job_state(db_url, job_id)
    assert state["status"] == "done" and state["progress"] == 1.0 and state["run_id"] == 1
    messages = [v["message"] for v in seen if "message" in v]
    assert messages[0].startswith("Loading model")
    assert any(m.startswith("Compressing with random") for m in messages)
    steps = [m for m in messages if m.startswith("Generating both outputs: step")]
    assert steps[-1] == "Generating both outputs: step 16/16"
    assert any(m.startswith("Scoring") for m in messages) and messages[-1] == "Done"
    fractions = [v["progress"] for v in seen if "progress" in v]
    assert fractions == sorted(fractions)
    with session_scope(db_url) as session:
        assert run_count(session) == 1


def test_failed_job_keeps_its_message_and_stores_nothing(tmp_path, db_url):
    worker = Worker(db_url, ModelPool("cpu"))
    job_id = submit_compare(db_url, request(tmp_path / "no-model"))
    worker.run_once()
    state = job_state(db_url, job_id)
    assert state["status"] == "failed" and state["error"].startswith("Model directory not found")
    with session_scope(db_url) as session:
        assert run_count(session) == 0


def test_interrupted_jobs_go_back_to_the_queue(tiny_checkpoint, db_url):
    job_id = submit_compare(db_url, request(tiny_checkpoint))
    with session_scope(db_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="running"))
    worker = Worker(db_url, ModelPool("cpu"))
    assert worker.requeue_interrupted() == 1
    assert job_state(db_url, job_id)["status"] == "queued"
    assert worker.run_once() and job_state(db_url, job_id)["status"] == "done"


def test_bad_requests_are_refused_before_queueing(db_url):
    with pytest.raises(UserError, match="empty"):
        submit_compare(db_url, CompareRequest(prompt=""))
    with session_scope(db_url) as session:
        assert session.query(Job).count() == 0


def test_a_second_worker_leaves_a_live_workers_job_alone_and_takes_a_stopped_ones(tiny_checkpoint, db_url):
    live, lost = (submit_compare(db_url, request(tiny_checkpoint, seed=seed)) for seed in (0, 1))
    with session_scope(db_url) as session:
        session.execute(update(Job).where(Job.id == live).values(status="running", worker_id="other:1:a",
                                                                  heartbeat_at=utcnow()))
        session.execute(update(Job).where(Job.id == lost).values(status="running", worker_id="other:2:b",
                                                                  heartbeat_at=utcnow() - timedelta(minutes=5)))
    worker = Worker(db_url, ModelPool("cpu"))
    assert worker.requeue_interrupted() == 1
    assert job_state(db_url, live)["status"] == "running" and job_state(db_url, lost)["status"] == "queued"
    assert worker.run_once() and not worker.run_once()
    assert job_state(db_url, lost)["status"] == "done" and job_state(db_url, live)["status"] == "running"


def test_two_workers_on_one_database_run_each_job_once(tiny_checkpoint, db_url):
    jobs = [submit_compare(db_url, request(tiny_checkpoint, seed=seed)) for seed in range(6)]
    workers = [Worker(db_url, ModelPool("cpu"), poll_seconds=0.05, heartbeat_seconds=0.05) for _ in range(2)]
    ran: dict[str, list[int]] = {w.worker_id: [] for w in workers}
    for w in workers:
        original = w.run_job
        w.run_job = lambda job, w=w, original=original: (ran[w.worker_id].append(job.id), original(job))
        w.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(job_state(db_url, j)["status"] != "done" for j in jobs):
        time.sleep(0.1)
    for w in workers:
        w.stop()
    assert all(job_state(db_url, j)["status"] == "done" for j in jobs)
    assert sorted(ran[workers[0].worker_id] + ran[workers[1].worker_id]) == jobs
    with session_scope(db_url) as session:
        assert run_count(session) == len(jobs)
        assert {job.worker_id for job in session.query(Job)} <= set(ran)


def test_a_running_job_beats_and_the_unknown_kind_fails_with_a_message(db_url, monkeypatch):
    worker = Worker(db_url, ModelPool("cpu"), heartbeat_seconds=0.05)
    started, release = threading.Event(), threading.Event()
    monkeypatch.setitem(worker_module.JOB_KINDS, "wait", lambda w, job, progress: (started.set(), release.wait(5),
                                                                                   {"status": "done"})[-1])
    with session_scope(db_url) as session:
        session.add_all([Job(kind="wait", params={}, status="queued", message="Queued"),
                         Job(kind="no-such-kind", params={}, status="queued", message="Queued")])
    runner = threading.Thread(target=worker.run_once)
    runner.start()
    assert started.wait(5)
    with session_scope(db_url) as session:
        first = session.get(Job, 1).heartbeat_at
    time.sleep(0.3)
    with session_scope(db_url) as session:
        job = session.get(Job, 1)
        assert job.worker_id == worker.worker_id and job.heartbeat_at > first
    release.set()
    runner.join(5)
    assert job_state(db_url, 1)["status"] == "done"
    worker.run_once()
    assert job_state(db_url, 2)["error"] == "Unknown job kind 'no-such-kind'"


def test_the_server_worker_can_be_switched_off_for_a_worker_process(monkeypatch):
    monkeypatch.setenv("COMPRESSLENS_WORKER", "off")
    assert not worker_module.in_process_worker()
    monkeypatch.setenv("COMPRESSLENS_WORKER", "sometimes")
    with pytest.raises(UserError, match="COMPRESSLENS_WORKER is 'sometimes'"):
        worker_module.in_process_worker()
    monkeypatch.delenv("COMPRESSLENS_WORKER")
    assert worker_module.in_process_worker()


def test_a_job_of_an_exited_process_on_this_host_is_requeued_at_once(tiny_checkpoint, db_url):
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    job_id = submit_compare(db_url, request(tiny_checkpoint))
    with session_scope(db_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            status="running", worker_id=f"{socket.gethostname()}:{gone.stdout.strip()}:a", heartbeat_at=utcnow()))
    assert Worker(db_url, ModelPool("cpu")).requeue_interrupted() == 1
    assert job_state(db_url, job_id)["status"] == "queued"


def test_a_worker_whose_job_was_taken_over_stops_and_leaves_the_job_to_the_new_worker(db_url, monkeypatch):
    slow = Worker(db_url, ModelPool("cpu"), heartbeat_seconds=0.05)
    taken, wrote = threading.Event(), []

    def stalls_then_reports(w, job, progress):
        assert taken.wait(5)
        time.sleep(0.2)  # a beat finds the job gone
        progress(0.5, "half way")
        wrote.append("results")  # never reached: a lost job writes nothing more
        return {"status": "done"}

    monkeypatch.setitem(worker_module.JOB_KINDS, "stall", stalls_then_reports)
    with session_scope(db_url) as session:
        session.add(Job(kind="stall", params={}, status="queued", message="Queued"))
    runner = threading.Thread(target=slow.run_once)
    runner.start()
    time.sleep(0.1)
    with session_scope(db_url) as session:  # what a requeue and another worker's claim do
        session.execute(update(Job).where(Job.id == 1).values(worker_id="other:1:a", message="Starting"))
    taken.set()
    runner.join(5)
    assert wrote == []
    state = job_state(db_url, 1)
    assert state["status"] == "running" and state["message"] == "Starting" and state["progress"] == 0.0


@pytest.mark.sqlite_only
def test_a_worker_process_killed_mid_experiment_is_replaced_and_the_experiment_finishes_once(tiny_plan,
                                                                                            tiny_checkpoint, db_url):
    import os
    import signal
    import subprocess
    import sys

    from core.pipeline.experiments import experiment_summary, total_units
    from core.pipeline.worker import submit_experiment
    from db.queries import output_rows

    plan = tiny_plan(tiny_checkpoint, n_prompts=4, batch_size=1)
    experiment_id, job_id = submit_experiment(db_url, plan)
    expected = total_units(plan, 4)
    command = [sys.executable, "-m", "core", "worker", "--db", db_url]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def stored() -> list:
        with session_scope(db_url) as session:
            return output_rows(session, experiment_id)

    first = subprocess.Popen(command, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(stored()) < 3:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = {(r["run_id"], r["source_id"], r["condition"]): r["output"] for r in stored()}
    assert 3 <= len(before) < expected and job_state(db_url, job_id)["status"] == "running"  # killed mid-run

    second = subprocess.Popen(command, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and job_state(db_url, job_id)["status"] != "done":
            time.sleep(0.2)
    finally:
        second.terminate()
        second.wait(10)
    after = {(r["run_id"], r["source_id"], r["condition"]): r["output"] for r in stored()}
    assert job_state(db_url, job_id)["status"] == "done" and len(stored()) == len(after) == expected
    assert all(after[key] == text for key, text in before.items())  # nothing lost, nothing written twice
    assert experiment_summary(db_url, experiment_id)["status"] == "done"


def test_the_worker_and_page_writes_side_by_side_never_meet_a_locked_database(tiny_plan, tiny_checkpoint, db_url):
    """While a worker writes an experiment batch by batch, a page tags a run over and over: every write of
    both goes through (short transactions; SQLite waits for the lock instead of failing)."""
    from core.pipeline.service import compare
    from core.pipeline.worker import submit_experiment
    from db.queries import set_tags

    view = compare(request(tiny_checkpoint), ModelPool("cpu"), db_url)
    _, job_id = submit_experiment(db_url, tiny_plan(tiny_checkpoint, n_prompts=3, batch_size=1))
    worker = Worker(db_url, ModelPool("cpu"), poll_seconds=0.05).start()
    errors, writes = [], 0
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and job_state(db_url, job_id)["status"] in ("queued", "running"):
            try:
                with session_scope(db_url) as session:
                    set_tags(session, view["run_id"], [f"pass-{writes % 3}"])
                writes += 1
            except Exception as exc:  # any failure at all is what this test looks for
                errors.append(exc)
            time.sleep(0.01)  # a page's pace: a loop with no pause would starve the worker thread of the GIL
    finally:
        worker.stop()
    assert errors == [] and writes > 10
    assert job_state(db_url, job_id)["status"] == "done"
