"""The worker: owns the loaded models and runs queued jobs outside any Streamlit script.

Pages submit a job row and poll it; a click that reruns a page therefore never kills a model
call. The worker runs as a daemon thread of the Streamlit server (started once through
``st.cache_resource``; ``COMPRESSLENS_WORKER=off`` leaves it out) or as its own process
(``python -m core worker``). Several workers may serve one database: a job is claimed by one, which
refreshes its heartbeat while it runs; a job whose heartbeat stopped, or whose process on this host
exited, goes back to the queue.
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

from sqlalchemy import select, update

from core.errors import UserError
from core.pipeline.service import CompareRequest, ModelPool, Progress, compare
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
    """Queue a plan (a new experiment, or the stored one with the same plan, which resumes); returns
    (experiment, job). An experiment already queued or running keeps its job."""
    from core.pipeline.experiments import find_or_create

    experiment_id = find_or_create(plan, db_url)
    with session_scope(db_url) as session:
        live = session.scalar(select(Job.id).where(Job.experiment_id == experiment_id,
                                                   Job.status.in_(("queued", "running"))))
        if live is not None:
            return experiment_id, live
        job = Job(kind="experiment", params={}, experiment_id=experiment_id, status="queued", message="Queued")
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
    from core.pipeline.backends import Cancelled
    from core.pipeline.experiments import Plan, Runner, experiment_summary
    from db.models import Experiment

    def cancelled() -> bool:
        return job_state(worker.db_url, job.id)["status"] == "cancelled"

    with session_scope(worker.db_url) as session:
        experiment = session.get(Experiment, job.experiment_id)
        plan = Plan.from_dict(experiment.plan) if experiment is not None else Plan()
    status = "done"
    try:
        Runner(job.experiment_id, worker.pool, worker.db_url, progress, cancelled,
               worker.backend(plan.backend, plan.actors)).run()
    except Cancelled:
        status = "cancelled"
    summary = experiment_summary(worker.db_url, job.experiment_id)
    return {"status": status, "progress": summary["outputs"] / max(summary["total_units"], 1),
            "message": f"{status.capitalize()}: {summary['outputs']}/{summary['total_units']}"}


# Every kind of job: what runs it; it returns the job's final fields.
JOB_KINDS = {"compare": run_compare, "experiment": run_experiment}


def _exited_here(worker_id: str | None) -> bool:
    """Whether a worker id (host:pid:random) names a process of this host that no longer runs."""
    host, _, rest = (worker_id or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class JobLost(Exception):
    """The job was requeued and claimed by another worker while this one still ran it."""


class Worker:
    def __init__(self, db_url: str, pool: ModelPool | None = None, poll_seconds: float = 0.5,
                 heartbeat_seconds: float = HEARTBEAT_S, stale_after_seconds: float = STALE_AFTER_S,
                 echo: Progress | None = None):
        """``echo`` hears every progress report too (the CLI prints them)."""
        self.db_url = db_url
        self.echo = echo
        self.pool = pool or ModelPool()
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after_seconds = stale_after_seconds
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.current_job: int | None = None
        self._ray = None  # the Ray backend's actors, kept across jobs: each holds its loaded models

    def backend(self, name: str, actors: int = 0):
        """Where this worker's experiments generate (core.pipeline.backends); Ray's actors outlive a job, and a
        page that reruns never touches them: the worker owns them."""
        from core.pipeline.backends import RayBackend, make_backend

        if name != "ray":
            return make_backend(name, self.pool)
        if self._ray is None or (actors and self._ray.actors != actors):
            if self._ray is not None:
                self._ray.shutdown()
            self._ray = RayBackend(actors)
        return self._ray

    def requeue_interrupted(self) -> int:
        """Running jobs whose worker stopped beating, or whose process on this host has exited, go back to
        the queue; a live worker's job stays its own."""
        cutoff = utcnow() - timedelta(seconds=self.stale_after_seconds)
        requeued = 0
        with session_scope(self.db_url) as session:
            running = session.execute(select(Job.id, Job.worker_id, Job.heartbeat_at).where(Job.status == "running"))
            for job_id, worker_id, beat in running.all():
                if beat is not None and beat >= cutoff and not _exited_here(worker_id):
                    continue
                owner = Job.worker_id.is_(None) if worker_id is None else Job.worker_id == worker_id
                result = session.execute(update(Job).where(Job.id == job_id, Job.status == "running", owner)
                                         .values(status="queued", worker_id=None,
                                                 message="Requeued after an interrupted worker"))
                requeued += result.rowcount or 0
        return requeued

    def claim(self, job_id: int) -> Job | None:
        """The queued job, now running here; None when it is not queued (another worker has it, or it ended)."""
        with session_scope(self.db_url) as session:
            now = utcnow()
            claimed = session.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                                      .values(status="running", started_at=now, heartbeat_at=now,
                                              worker_id=self.worker_id, message="Starting"))
            return session.get(Job, job_id) if claimed.rowcount == 1 else None

    def claim_next(self) -> Job | None:
        with session_scope(self.db_url) as session:
            queued = list(session.scalars(select(Job.id).where(Job.status == "queued").order_by(Job.id)))
        for job_id in queued:
            job = self.claim(job_id)
            if job is not None:
                return job
        return None

    def _beat(self, job_id: int, done: threading.Event, lost: threading.Event) -> None:
        while not done.wait(self.heartbeat_seconds):
            try:
                with session_scope(self.db_url) as session:
                    beat = session.execute(update(Job).where(Job.id == job_id, Job.worker_id == self.worker_id)
                                           .values(heartbeat_at=utcnow()))
                    if beat.rowcount == 0:
                        lost.set()
                        return
            except Exception:  # a busy database skips one beat; the next one comes soon
                log.warning("heartbeat of job %s failed:\n%s", job_id, traceback.format_exc())

    def _set(self, job_id: int, **values) -> None:
        """Writes the job's fields while it is still this worker's; a job taken over is left to its new worker."""
        with session_scope(self.db_url) as session:
            session.execute(update(Job).where(Job.id == job_id, Job.worker_id == self.worker_id).values(**values))

    def run_job(self, job: Job) -> None:
        self.current_job = job.id
        last = [0.0]
        done, lost = threading.Event(), threading.Event()
        threading.Thread(target=self._beat, args=(job.id, done, lost), name=f"heartbeat-{job.id}",
                         daemon=True).start()

        def progress(fraction: float, message: str) -> None:
            if lost.is_set():  # stop before writing results another worker is writing too
                raise JobLost
            if self.echo is not None:
                self.echo(fraction, message)
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or fraction >= 1.0:
                last[0] = now
                self._set(job.id, progress=fraction, message=message)

        try:
            if job.kind not in JOB_KINDS:
                raise UserError(f"Unknown job kind {job.kind!r}")
            self._set(job.id, **JOB_KINDS[job.kind](self, job, progress), finished_at=utcnow())
        except JobLost:
            log.warning("job %s was taken over by another worker; this one stopped", job.id)
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
        if self._ray is not None:
            self._ray.shutdown()
            self._ray = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
