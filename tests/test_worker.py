import pytest
from sqlalchemy import update

from core import worker as worker_module
from core.errors import UserError
from core.service import CompareRequest, Engine
from core.worker import Worker, job_state, submit_compare
from db.models import Job
from db.queries import run_count
from db.session import session_scope

PROMPT = "A shop sells 4 pens for $2. How much do 10 pens cost?"


def request(model, **kw):
    return CompareRequest(prompt=PROMPT, compressor="random", model=str(model), preset="custom",
                          sampler={"gen_length": 16, "steps": 16, "block_length": 8}, **kw)


def test_job_reports_each_stage_and_stores_one_run(tiny_checkpoint, db_url, monkeypatch):
    monkeypatch.setattr(worker_module, "PROGRESS_INTERVAL_S", 0.0)
    worker = Worker(db_url, Engine("cpu"))
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
    worker = Worker(db_url, Engine("cpu"))
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
    worker = Worker(db_url, Engine("cpu"))
    assert worker.requeue_interrupted() == 1
    assert job_state(db_url, job_id)["status"] == "queued"
    assert worker.run_once() and job_state(db_url, job_id)["status"] == "done"


def test_bad_requests_are_refused_before_queueing(db_url):
    with pytest.raises(UserError, match="empty"):
        submit_compare(db_url, CompareRequest(prompt=""))
    with session_scope(db_url) as session:
        assert session.query(Job).count() == 0
