"""The worker: owns the loaded models and runs queued jobs outside any Streamlit script.

Pages submit a job row and poll it; a click that reruns a page therefore never kills a model
call. The worker runs as a daemon thread of the Streamlit server (started once through
``st.cache_resource``; ``COMPRESSLENS_WORKER=off`` leaves it out) or as its own process
(``python -m core worker``). Several workers may serve one database: a job is claimed by one, which
refreshes its heartbeat while it runs; a job whose heartbeat stopped goes back to the queue.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from datetime import timedelta

from sqlalchemy import or_, select, update

from core.errors import UserError
from core.service import CompareRequest, ModelPool, compare
from db.models import Job, utcnow
from db.session import session_scope

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25
HEARTBEAT_S = 5.0  # how often a worker says it still runs its job
STALE_AFTER_S = 60.0  # a running job unheard of this long has lost its worker


def submit_compare(db_url: str, request: CompareRequest) -> int:
    """Queue a comparison after checking what can be checked without a model; returns the job id."""
    request.validate()
    with session_scope(db_url) as session:
        job = Job(kind="compare", params=request.to_dict(), status="queued", message="Queued")
        session.add(job)
        session.flush()
        return job.id


def submit_experiment(db_url: str, plan) -> tuple[int, int]:
    """Queue a plan (a new experiment, or the unfinished one with the same plan); returns (experiment, job)."""
    from core.experiments import find_or_create

    experiment_id = find_or_create(plan, db_url)
    with session_scope(db_url) as session:
        job = Job(kind="experiment", params={"experiment_id": experiment_id}, status="queued", message="Queued")
        session.add(job)
        session.flush()
        return experiment_id, job.id


def job_state(db_url: str, job_id: int) -> dict | None:
    with session_scope(db_url) as session:
        job = session.get(Job, job_id)
        if job is None:
            return None
        return {"id": job.id, "status": job.status, "progress": job.progress, "message": job.message,
                "error": job.error, "run_id": job.run_id}


def in_process_worker() -> bool:
    """Whether a Streamlit server runs a worker of its own (COMPRESSLENS_WORKER, default on)."""
    setting = os.environ.get("COMPRESSLENS_WORKER", "on").strip().lower()
    if setting not in ("on", "off"):
        raise UserError(f"COMPRESSLENS_WORKER is {setting!r}; use 'on' (a worker in the server) or 'off' "
                        "(jobs wait for `python -m core worker`)")
    return setting == "on"


def run_compare(worker: "Worker", job: Job, progress) -> dict:
    view = compare(CompareRequest.from_dict(job.params), worker.pool, worker.db_url, progress)
    return {"status": "done", "progress": 1.0, "message": "Done", "run_id": view["run_id"]}


def run_experiment(worker: "Worker", job: Job, progress) -> dict:
    from core.experiments import Runner

    summary = Runner(job.params["experiment_id"], worker.pool, worker.db_url, progress).run()
    return {"status": summary["status"],
            "message": f"{summary['status'].capitalize()}: {summary['outputs']}/{summary['total_units']}"}


# Every kind of job: what runs it; it returns the job's final fields.
JOB_KINDS = {"compare": run_compare, "experiment": run_experiment}


class Worker:
    def __init__(self, db_url: str, pool: ModelPool | None = None, poll_seconds: float = 0.5,
                 heartbeat_seconds: float = HEARTBEAT_S, stale_after_seconds: float = STALE_AFTER_S):
        self.db_url = db_url
        self.pool = pool or ModelPool()
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after_seconds = stale_after_seconds
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.current_job: int | None = None

    def requeue_interrupted(self) -> int:
        """Running jobs whose worker stopped beating go back to the queue; a live worker's job stays its own."""
        cutoff = utcnow() - timedelta(seconds=self.stale_after_seconds)
        with session_scope(self.db_url) as session:
            result = session.execute(
                update(Job).where(Job.status == "running", or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff))
                .values(status="queued", worker_id=None, message="Requeued after an interrupted worker"))
            return result.rowcount or 0

    def claim_next(self) -> Job | None:
        with session_scope(self.db_url) as session:
            for job in session.scalars(select(Job).where(Job.status == "queued").order_by(Job.id)):
                now = utcnow()
                claimed = session.execute(update(Job).where(Job.id == job.id, Job.status == "queued")
                                          .values(status="running", started_at=now, heartbeat_at=now,
                                                  worker_id=self.worker_id, message="Starting"))
                if claimed.rowcount == 1:
                    return job
        return None

    def _beat(self, job_id: int, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_seconds):
            try:
                with session_scope(self.db_url) as session:
                    session.execute(update(Job).where(Job.id == job_id, Job.worker_id == self.worker_id)
                                    .values(heartbeat_at=utcnow()))
            except Exception:  # a busy database skips one beat; the next one comes soon
                log.warning("heartbeat of job %s failed:\n%s", job_id, traceback.format_exc())

    def _set(self, job_id: int, **values) -> None:
        with session_scope(self.db_url) as session:
            session.execute(update(Job).where(Job.id == job_id).values(**values))

    def run_job(self, job: Job) -> None:
        self.current_job = job.id
        last = [0.0]
        done = threading.Event()
        threading.Thread(target=self._beat, args=(job.id, done), name=f"heartbeat-{job.id}", daemon=True).start()

        def progress(fraction: float, message: str) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or fraction >= 1.0:
                last[0] = now
                self._set(job.id, progress=fraction, message=message)

        try:
            if job.kind not in JOB_KINDS:
                raise UserError(f"Unknown job kind {job.kind!r}")
            self._set(job.id, **JOB_KINDS[job.kind](self, job, progress), finished_at=utcnow())
        except UserError as exc:
            self._set(job.id, status="failed", error=str(exc), message="Failed", finished_at=utcnow())
        except Exception as exc:  # the worker must outlive any single job
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self._set(job.id, status="failed", error=f"Internal error: {type(exc).__name__}: {exc}",
                      message="Failed", finished_at=utcnow())
        finally:
            done.set()
            self.current_job = None

    def run_once(self) -> bool:
        job = self.claim_next()
        if job is None:
            return False
        self.run_job(job)
        return True

    def serve(self) -> None:
        last_requeue = -float("inf")
        while not self._stop.is_set():
            # A job another worker lost is picked up by whoever is idle; looking once a heartbeat
            # period is enough, and keeps an idle worker from writing to the database every poll.
            if time.monotonic() - last_requeue >= self.heartbeat_seconds:
                self.requeue_interrupted()
                last_requeue = time.monotonic()
            if not self.run_once():
                self._stop.wait(self.poll_seconds)

    def start(self) -> "Worker":
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self.serve, name="compresslens-worker", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
