"""Where an experiment's generations run: in the worker's own process, or sharded over Ray actors.

The runner (core.pipeline.experiments) plans the work and stores every result itself, under the same
unique keys whichever backend generated it, so a run can start on one and resume on the other. A
backend only turns units (one batch of one condition) into generations, yielding each as it is done:

- ``LocalBackend``: one after the other, with the worker's own loaded models (the default);
- ``RayBackend``: Ray actors, one per GPU (or CPU actors where there is none), each loading its models
  once and taking the next unit when it is free. An actor that dies is restarted by Ray and its unit
  run again; the out-of-memory halving happens inside each actor's generator.

Ray is an optional extra (``./scripts/setup.sh --ray``): ``ray.init()`` on this machine, or the cluster
at ``COMPRESSLENS_RAY_ADDRESS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from core.errors import UserError
from core.llada.sampler import SamplerParams
from core.pipeline import conditions

BACKENDS = ("local", "ray")
ROOT = Path(__file__).resolve().parents[2]
# What a remote cluster need not receive with the code (a local one reads the checkout in place).
NOT_SHIPPED = [".venv", ".git", "data", "*.db", ".device", ".whl", "__pycache__"]


class Cancelled(Exception):
    pass


@dataclass
class Unit:
    """One batch of one condition for one model, as generated; ``index`` says which of the runner's units."""

    index: int
    model: str
    condition: str
    prompts: list[str]
    canvases: list
    params: dict  # SamplerParams.to_dict()
    seed: int


@dataclass
class Done:
    unit: Unit
    generations: list
    notes: list[str] = field(default_factory=list)  # what the generator said meanwhile (a halved batch)
    actor: int = 0


def generate_unit(pool, unit: Unit) -> tuple[list, list[str]]:
    generator = pool.generator(unit.model)
    notes = getattr(generator, "notes", [])
    before = len(notes)
    generations = conditions.generate(generator, unit.condition, unit.prompts, unit.canvases,
                                      SamplerParams(**unit.params), unit.seed)
    return generations, list(notes[before:])


class LocalBackend:
    name = "local"

    def __init__(self, pool):
        self.pool = pool
        self.actors = 1

    def generator(self, model_id: str):
        return self.pool.generator(model_id)

    def run(self, units: Iterable[Unit], cancelled: Callable[[], bool]) -> Iterator[Done]:
        for unit in units:
            if cancelled():
                raise Cancelled
            yield Done(unit, *generate_unit(self.pool, unit))


class GenerationActor:
    """A Ray actor: its own model pool on its own device (Ray gives each one GPU, or none)."""

    def __init__(self):
        from core.pipeline.service import ModelPool

        self.pool = ModelPool()

    def info(self, model_id: str):
        return self.pool.generator(model_id).info

    def generate(self, unit: Unit) -> tuple[list, list[str], int]:
        return (*generate_unit(self.pool, unit), os.getpid())

    def pid(self) -> int:
        return os.getpid()

    def peak_memory(self) -> int | None:
        """The most GPU memory this actor has held, in bytes; None without a GPU."""
        import torch

        return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def ray_module():
    try:
        import ray
    except ImportError:
        raise UserError("The Ray backend needs Ray: run ./scripts/setup.sh --ray (or pip install ray), or run "
                        "the experiment on the local backend") from None
    return ray


def connect(ray) -> None:
    """Joins the cluster at COMPRESSLENS_RAY_ADDRESS, else starts Ray on this machine."""
    address = os.environ.get("COMPRESSLENS_RAY_ADDRESS", "").strip() or None
    if not ray.is_initialized():
        if address:
            runtime_env = {"working_dir": str(ROOT), "excludes": NOT_SHIPPED}
        else:  # workers on this machine import the checkout in place
            runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}}
        try:
            ray.init(address=address, runtime_env=runtime_env, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"Could not reach Ray at {address or 'this machine'}: {exc}") from None


class RayBackend:
    """Ray actors that generate; ``actors`` 0 means one per GPU of the cluster, or two CPU actors without GPUs."""

    name = "ray"

    def __init__(self, actors: int = 0):
        ray = self.ray = ray_module()
        connect(ray)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.actors = actors or gpus or 2
        resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        # Ray restarts a dead actor and runs its unfinished unit again on it.
        remote = ray.remote(GenerationActor).options(max_restarts=3, max_task_retries=3, **resources)
        self.handles = [remote.remote() for _ in range(self.actors)]
        self._facts: dict[str, ModelFacts] = {}

    def generator(self, model_id: str):
        """What the runner reads of a model besides its generations: its facts and its tokenizer's counts,
        here without loading the weights (the actors hold those)."""
        if model_id not in self._facts:
            self._facts[model_id] = ModelFacts(self.ray.get(self.handles[0].info.remote(model_id)), model_id)
        return self._facts[model_id]

    def pids(self) -> list[int]:
        return self.ray.get([h.pid.remote() for h in self.handles])

    def warm(self, model_id: str) -> None:
        """Every actor loads the model now (otherwise each loads it on its first unit)."""
        self.ray.get([h.info.remote(model_id) for h in self.handles])

    def peak_memory(self) -> list[int | None]:
        return self.ray.get([h.peak_memory.remote() for h in self.handles])

    def run(self, units: Iterable[Unit], cancelled: Callable[[], bool]) -> Iterator[Done]:
        """Each free actor takes the next unit (made when it is taken); results come back as they are done. Once
        ``cancelled()``, no unit is handed out, those running finish and are yielded, then Cancelled."""
        ray = self.ray
        queue, free, pending, stopped = iter(units), list(range(len(self.handles))), {}, False
        while True:
            while free and not stopped:
                unit = next(queue, None)
                if unit is None:
                    break
                if cancelled():
                    stopped = True
                    break
                actor = free.pop()
                pending[self.handles[actor].generate.remote(unit)] = (actor, unit)
            if not pending:
                break
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            actor, unit = pending.pop(ready)
            free.append(actor)
            try:
                generations, notes, _pid = ray.get(ready)
            except ray.exceptions.RayTaskError as exc:  # the generator's own error, e.g. a prompt too long
                raise exc.as_instanceof_cause() from None
            yield Done(unit, generations, notes, actor)
        if stopped:
            raise Cancelled

    def shutdown(self) -> None:
        for handle in self.handles:
            self.ray.kill(handle)
        self.handles = []


class ModelFacts:
    """A model's facts (ModelInfo) from an actor and its tokenizer here, for counting tokens."""

    def __init__(self, info, model_id: str):
        self.info = info
        self.model_id = model_id
        self._tokenizer = None

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_id)
        return len(self._tokenizer(text, add_special_tokens=False).input_ids)


def load_tokenizer(model_id: str):
    """A model's tokenizer alone: what the coordinator needs to count tokens and place infill masks."""
    from core.generation import ar
    from core.llada import loader
    from core.pipeline.service import diffusion_dir, is_control

    if is_control(model_id):
        from transformers import AutoTokenizer

        folder, gguf = ar.resolve(model_id)
        return AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf)
    return loader.load_tokenizer(diffusion_dir(model_id))


def make_backend(name: str, pool, actors: int = 0):
    if name not in BACKENDS:
        raise UserError(f"Unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    return LocalBackend(pool) if name == "local" else RayBackend(actors)
