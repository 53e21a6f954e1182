"""Experiments: prompts x compressors x ratios x conditions x seeds x models, run incrementally.

A plan expands into run configurations (model, compressor, ratio, seed); each configuration is
a stored run whose items are the sampled prompts, run under the plan's conditions
(``core.pipeline.conditions``): ``original`` once per model and seed, in a baseline run whose
compressor is ``none``, the others in each compressor's run at each ratio.

Every output is written with its metrics the moment its batch is done; the unique keys of runs,
items, conditions and outputs make a rerun skip what exists, so a killed run resumes where it
stopped with no duplicate and nothing lost.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable

from sqlalchemy import select, update

from core.data import datasets
from core.errors import UserError
from core.generation import demo
from core.llada.sampler import SamplerParams
from core.pipeline import compressors, conditions, infill, metrics, store
from core.pipeline.backends import BACKENDS, Unit, make_backend
from core.pipeline.conditions import CONDITIONS, STUDY_CONDITIONS
from core.pipeline.service import CompareRequest, ModelPool, Progress, default_model, score_output
from db import models
from db.queries import NO_COMPRESSION, baseline_runs, condition_texts, experiment_run_id, experiment_states
from db.session import session_scope



def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _list_of(check):
    return lambda value: isinstance(value, list) and all(check(v) for v in value)


def _dict_of(check):
    return lambda value: isinstance(value, dict) and all(isinstance(k, str) and check(v) for k, v in value.items())


def _text(value) -> bool:
    return isinstance(value, str)


# What each plan key holds, checked before a plan is built, so a malformed one gets a message.
PLAN_TYPES = {
    "name": _text, "source": lambda v: isinstance(v, (str, dict, list)), "n_prompts": _integer,
    "sample_seed": _integer,
    "compressors": _list_of(lambda c: isinstance(c, dict) and isinstance(c.get("name"), str)
                            and isinstance(c.get("params", {}), dict)),
    "ratios": _list_of(_number), "conditions": _list_of(_text), "seeds": _list_of(_integer),
    "models": _list_of(_text), "preset": lambda v: v is None or _text(v),
    "sampler": lambda v: v is None or _dict_of(lambda _value: True)(v), "gen_length": _dict_of(_integer),
    "instructions": lambda v: v is None or _dict_of(_text)(v), "bertscore_backbone": lambda v: v is None or _text(v),
    "batch_size": _integer, "infill_length": _text, "infill_k": _integer, "backend": _text, "actors": _integer,
}
PLAN_TYPE_NAMES = {
    "name": "text", "source": "a source name or spec, or a list of them", "n_prompts": "a whole number",
    "sample_seed": "a whole number", "compressors": 'a list of {"name": ..., "params": {...}}',
    "ratios": "a list of numbers", "conditions": "a list of condition names", "seeds": "a list of whole numbers",
    "models": "a list of model ids", "preset": "a preset name or null", "sampler": "an object or null",
    "gen_length": "an object of whole numbers by task", "instructions": "an object of texts by task, or null",
    "bertscore_backbone": "a backbone name or null", "batch_size": "a whole number", "infill_length": "text",
    "infill_k": "a whole number", "backend": "local or ray", "actors": "a whole number",
}
# How a plan runs, not what it is: an experiment resumed on another backend stays the same experiment.
EXECUTION_KEYS = ("backend", "actors")


@dataclass
class Plan:
    name: str = "experiment"
    # One source or several, each a registered name or a spec dict (see core.data.datasets); n_prompts from each.
    source: str | dict | list[str | dict] = "gsm8k"
    n_prompts: int = 20
    sample_seed: int = 0
    compressors: list[dict] = field(default_factory=lambda: [{"name": "llmlingua2", "params": {}}])
    ratios: list[float] = field(default_factory=lambda: [2.0])
    conditions: list[str] = field(default_factory=lambda: list(STUDY_CONDITIONS))
    seeds: list[int] = field(default_factory=lambda: [0])
    models: list[str] = field(default_factory=list)  # empty: the app's default model
    preset: str | None = None
    sampler: dict | None = None
    gen_length: dict[str, int] = field(default_factory=dict)  # per task, overrides the preset's
    instructions: dict[str, str] | None = None  # per task; None: TASK_INSTRUCTIONS (none for the demo model)
    bertscore_backbone: str | None = None
    batch_size: int = 16
    infill_length: str = "oracle"  # masks per gap of the infilled condition: core.pipeline.infill.LENGTH_RULES
    infill_k: int = infill.DEFAULT_K  # masks per gap under the "fixed" rule
    backend: str = "local"  # core.pipeline.backends: the worker's own process, or Ray actors
    actors: int = 0  # Ray actors; 0: one per GPU, or two CPU actors without GPUs

    @classmethod
    def from_dict(cls, raw: dict) -> "Plan":
        if not isinstance(raw, dict):
            raise UserError("A plan is one JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise UserError(f"Unknown plan key(s): {', '.join(unknown)}; a plan has {', '.join(sorted(known))}")
        for key, value in raw.items():
            if not PLAN_TYPES[key](value):
                raise UserError(f"Plan key {key!r} must be {PLAN_TYPE_NAMES[key]}, not {value!r}"[:300])
        plan = cls(**raw)
        plan.validate()
        return plan

    def to_dict(self) -> dict:
        return asdict(self)

    def model_ids(self) -> list[str]:
        return list(self.models) or [default_model()]

    def sources(self) -> list[str | dict]:
        return [self.source] if isinstance(self.source, (str, dict)) else list(self.source)

    def validate(self) -> None:
        names = []
        for source in self.sources():
            datasets.check_source(source)
            names.append(datasets.source_name(source))
        if not names:
            raise UserError("A plan needs at least one prompt source")
        if len(set(names)) < len(names):
            raise UserError(f"Two prompt sources share a name ({', '.join(names)}); their prompt ids would collide")
        if int(self.n_prompts) < 1 or int(self.batch_size) < 1:
            raise UserError("n_prompts and batch_size must be at least 1")
        if self.backend not in BACKENDS:
            raise UserError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if int(self.actors) < 0:
            raise UserError("actors must be 0 (one per GPU) or more")
        conditions.check(self.conditions)
        infill.check_rule(self.infill_length, self.infill_k)
        if any(c != "original" for c in self.conditions):
            if not self.compressors or not self.ratios:
                raise UserError("A plan with compressed conditions needs at least one compressor and one ratio")
            for spec in self.compressors:
                compressors.get_compressor(spec.get("name", ""), **spec.get("params", {}))
            for ratio in self.ratios:
                compressors.check_ratio(ratio)
        if not self.seeds:
            raise UserError("A plan needs at least one seed")
        for task in set(self.gen_length) | set(self.instructions or {}):
            if task != "reconstruct":
                datasets.check_task(task)
        for model_id in self.model_ids():
            for task in ("math", *self.gen_length):
                self.sampler_params(model_id, task)

    def sampler_params(self, model_id: str, task: str) -> SamplerParams:
        params = CompareRequest(prompt="-", model=model_id, preset=self.preset, sampler=self.sampler).sampler_params()
        if task in self.gen_length:
            values = {**params.to_dict(), "gen_length": int(self.gen_length[task])}
            if values["steps"] > values["gen_length"]:
                values["steps"] = values["gen_length"]
            if params.mode == "dream":  # one canvas, no blocks
                values["block_length"] = values["gen_length"]
            params = SamplerParams(**values)
            if params.problems():
                raise UserError(f"gen_length {self.gen_length[task]} for {task}: " + "; ".join(params.problems()))
        return params

    def generation_params(self, model_id: str, task: str, condition: str) -> SamplerParams:
        """A reconstruction uses gen_length["reconstruct"] when the plan sets it, else its task's."""
        reconstructing = condition == "reconstructed" and "reconstruct" in self.gen_length
        return self.sampler_params(model_id, "reconstruct" if reconstructing else task)

    def instruction(self, model_id: str, task: str) -> str:
        if self.instructions is not None:
            return self.instructions.get(task, "")
        return "" if demo.is_demo(model_id) else datasets.TASK_INSTRUCTIONS.get(task, "")


def in_tokens_of(cut: compressors.Compression, count_tokens) -> compressors.Compression:
    """The compression with its token counts (and so its achieved ratio) in another model's tokens."""
    return replace(cut, original_tokens=count_tokens(cut.original),
                   compressed_tokens=count_tokens(cut.compressed))


@dataclass(frozen=True)
class RunSpec:
    """One stored run of an experiment: a model, a compressor at a ratio, a seed, and its conditions."""

    model: str
    compressor: str
    compressor_params: tuple
    ratio: float
    seed: int
    conditions: tuple[str, ...]

    @property
    def key(self) -> str:
        params = json.dumps(dict(self.compressor_params), sort_keys=True)
        return f"{self.model}|{self.compressor}|{params}|{self.ratio:g}|{self.seed}"


def expand(plan: Plan) -> list[RunSpec]:
    """Baselines first, so compressed conditions can be scored against the original output."""
    configs = []
    compressed_conditions = tuple(c for c in CONDITIONS if c in plan.conditions and c != "original")
    for model_id in plan.model_ids():
        for seed in plan.seeds:
            if "original" in plan.conditions:
                configs.append(RunSpec(model_id, NO_COMPRESSION, (), 1.0, int(seed), ("original",)))
            if compressed_conditions:
                for spec in plan.compressors:
                    params = tuple(sorted(spec.get("params", {}).items()))
                    for ratio in plan.ratios:
                        configs.append(RunSpec(model_id, spec["name"], params, float(ratio), int(seed),
                                              compressed_conditions))
    return configs


def sample_prompts(plan: Plan) -> list[datasets.Sample]:
    """n_prompts from each source, seeded; ids carry their source's name so several sources never collide."""
    samples = []
    for source in plan.sources():
        pool = datasets.load_source(source)
        name = datasets.source_name(source)
        chosen = random.Random(f"{plan.sample_seed}-{name}").sample(range(len(pool)), min(plan.n_prompts, len(pool)))
        samples += [replace(pool[i], source_id=f"{name}/{pool[i].source_id}") for i in chosen]
    return samples


def published_study(model: str | None = None) -> Plan:
    """The study this tool reproduces: 250 prompts each of GSM8K, the summarization set and ShareGPT,
    LLMLingua-2 at ratio 2, the four conditions, one seed."""
    return Plan(name="published study: LLMLingua-2 x2 on LLaDA", source=["gsm8k", "cnndm", "sharegpt"],
                n_prompts=250, compressors=[{"name": "llmlingua2", "params": {}}], ratios=[2.0],
                conditions=list(STUDY_CONDITIONS), seeds=[0], models=[model] if model else [],
                gen_length={"math": 256, "summarization": 256, "chat": 256})


def total_units(plan: Plan, n_items: int) -> int:
    return n_items * sum(len(c.conditions) for c in expand(plan))


def find_or_create(plan: Plan, db_url: str) -> int:
    """The experiment with this exact plan, or a new one; running it again resumes it, on the backend it now
    names."""
    plan.validate()
    wanted = plan.to_dict()
    defaults = Plan().to_dict()  # a plan stored before a key existed meant that key's default

    def identity(raw: dict) -> dict:
        return {k: v for k, v in {**defaults, **raw}.items() if k not in EXECUTION_KEYS}

    with session_scope(db_url) as session:
        for experiment in session.scalars(select(models.Experiment).where(models.Experiment.name == plan.name)):
            if identity(experiment.plan) == identity(wanted):
                experiment.plan = {**experiment.plan, **{k: wanted[k] for k in EXECUTION_KEYS}}
                return experiment.id
        experiment = models.Experiment(name=plan.name, plan=wanted,
                                       total_units=total_units(plan, len(sample_prompts(plan))))
        session.add(experiment)
        session.flush()
        return experiment.id


def cancel(db_url: str, experiment_id: int) -> None:
    """Ask a queued or running experiment to stop (its job, after the current batch); what it wrote stays."""
    with session_scope(db_url) as session:
        session.execute(update(models.Job)
                        .where(models.Job.experiment_id == experiment_id, models.Job.status.in_(("queued", "running")))
                        .values(status="cancelled", message="Cancelled", finished_at=models.utcnow()))


class Runner:
    """Executes one experiment; safe to start again on the same experiment at any time, on either backend."""

    def __init__(self, experiment_id: int, pool: ModelPool, db_url: str, progress: Progress | None = None,
                 cancelled: Callable[[], bool] = lambda: False, backend=None):
        """``backend`` runs the generations (core.pipeline.backends); None: the one the plan names."""
        self.experiment_id = experiment_id
        self.cancelled = cancelled
        self.pool = pool
        self.db_url = db_url
        self.say = progress or (lambda _f, _m: None)
        with session_scope(db_url) as session:
            experiment = session.get(models.Experiment, experiment_id)
            if experiment is None:
                raise UserError(f"No experiment #{experiment_id}")
            self.plan = Plan.from_dict(experiment.plan)
        self.samples = sample_prompts(self.plan)
        self.backbone = self.plan.bertscore_backbone or metrics.default_backbone()
        self.backend = backend or make_backend(self.plan.backend, pool, self.plan.actors)
        self.generated_tokens = 0
        self.batches_by_actor: dict[int, int] = {}
        self.last_note = ""  # the latest a generator said (a halved batch), shown until another

    def _run_row(self, config: RunSpec, generator) -> int:
        with session_scope(self.db_url) as session:
            existing = experiment_run_id(session, self.experiment_id, config.key)
            if existing is not None:
                return existing
            # An experiment run's sampler_params: {task: params} for every task among its prompts, and, when
            # the run has the reconstructed condition, the reconstruction's own {task: params} under "reconstructed".
            tasks = sorted({s.task for s in self.samples})
            params = {task: self.plan.generation_params(config.model, task, "original").to_dict() for task in tasks}
            if "reconstructed" in config.conditions:
                params["reconstructed"] = {task: self.plan.generation_params(config.model, task, "reconstructed")
                                           .to_dict() for task in tasks}
            run = store.new_run(generator.info, kind="experiment", preset=self.plan.preset or "model default",
                                sampler_params=params, seed=config.seed, compressor=config.compressor,
                                compressor_params=dict(config.compressor_params), ratio=config.ratio,
                                backbone=self.backbone, experiment_id=self.experiment_id, config_key=config.key,
                                model_id=config.model)
            session.add(run)
            session.flush()
            return run.id

    def _stored(self, run_id: int, condition: str) -> dict[str, str]:
        with session_scope(self.db_url) as session:
            return condition_texts(session, run_id, condition)

    def _baseline_outputs(self, config: RunSpec) -> dict[str, str]:
        with session_scope(self.db_url) as session:
            run_id = session.scalar(select(models.Run.id).where(*baseline_runs(self.experiment_id, config.model,
                                                                               config.seed)))
            return {} if run_id is None else condition_texts(session, run_id, "original")

    def run(self) -> dict:
        """Stores every unit not yet stored; raises Cancelled when ``cancelled()`` says so between batches.
        Its job (core.pipeline.worker) records how it ended."""
        started = time.perf_counter()
        total = total_units(self.plan, len(self.samples))
        done = 0
        for config in expand(self.plan):
            done = self._run_config(config, done, total, started)
        return self.summary()

    @staticmethod
    def _pool_id(model_id: str) -> str:
        return demo.DEMO_ID if demo.is_demo(model_id) else model_id

    def _run_config(self, config: RunSpec, done: int, total: int, started: float) -> int:
        generator = self.backend.generator(self._pool_id(config.model))
        run_id = self._run_row(config, generator)
        originals = self._baseline_outputs(config)
        # Every model reads the same compressed prompts: compressed once, for the plan's first model (its tokens
        # set the ratio; a compressor that asks a model asks it), and counted again in each model's own tokens.
        compressing_model = self.plan.model_ids()[0]
        compressor = (None if config.compressor == NO_COMPRESSION
                      else self.pool.compressor(config.compressor, dict(config.compressor_params), compressing_model))
        count_for_ratio = (generator.count_tokens if compressing_model == config.model
                           else self.backend.generator(self._pool_id(compressing_model)).count_tokens)
        stored = {condition: self._stored(run_id, condition) for condition in config.conditions}
        done += sum(len(texts) for texts in stored.values())
        cuts: dict[str, compressors.Compression] = {}

        def units_of(condition: str, rows_of: dict):
            """The condition's batches as units, each compressed when the backend asks for it, so compression runs
            beside generation and a cancel is heard between batches."""
            index = 0
            for start in range(0, len(self.samples), self.plan.batch_size):
                todo = [s for s in self.samples[start:start + self.plan.batch_size]
                        if s.source_id not in stored[condition]]
                if compressor is not None:
                    # Compression is deterministic, so a resumed batch recomputes it instead of storing it twice.
                    cuts.update({s.source_id: in_tokens_of(compressor.compress(s.prompt, config.ratio, count_for_ratio),
                                                           generator.count_tokens)
                                 for s in todo if s.source_id not in cuts})
                canvases = ([conditions.canvas(cuts[s.source_id], self.plan.infill_length, self.plan.infill_k,
                                               generator.count_tokens) for s in todo]
                            if condition == "infilled" else [None] * len(todo))
                prompts = [self._prompt(condition, config, s, cuts, stored, canvas)
                           for s, canvas in zip(todo, canvases)]
                for task in sorted({s.task for s in todo}):
                    rows = [i for i, s in enumerate(todo) if s.task == task]
                    params = self.plan.generation_params(config.model, task, condition)
                    unit = Unit(index, config.model, condition, [prompts[i] for i in rows],
                                [canvases[i] for i in rows], params.to_dict(), config.seed)
                    rows_of[index] = ([todo[i] for i in rows], unit.prompts)
                    index += 1
                    yield unit

        # Condition by condition, as a reconstruction's answer reads the reconstruction; within one, every batch
        # is a unit of its own that the backend may run beside the others.
        for condition in config.conditions:
            rows_of: dict[int, tuple[list, list[str]]] = {}
            units = units_of(condition, rows_of)
            for finished in self.backend.run(units, self.cancelled):
                samples, prompts = rows_of[finished.unit.index]
                generations = finished.generations
                self.generated_tokens += sum(generator.count_tokens(g.text) for g in generations)
                self._write(run_id, config, condition, samples, prompts, generations, cuts, originals, generator)
                stored[condition].update({s.source_id: g.text for s, g in zip(samples, generations)})
                self.batches_by_actor[finished.actor] = self.batches_by_actor.get(finished.actor, 0) + 1
                self.last_note = (finished.notes or [self.last_note])[-1]
                done += len(samples)
                self._report(done, total, started, config, condition)
        return done

    def _prompt(self, condition: str, config: RunSpec, sample: datasets.Sample, cuts: dict, stored: dict,
                canvas) -> str:
        return conditions.prompt_for(
            condition, instruction=self.plan.instruction(config.model, sample.task), prompt=sample.prompt,
            cut=cuts.get(sample.source_id), rebuilt={c: texts.get(sample.source_id) for c, texts in stored.items()},
            infill_canvas=canvas)

    def _write(self, run_id: int, config: RunSpec, condition: str, samples, prompts, generations, cuts, originals,
               generator) -> None:
        """One transaction per batch: items, conditions, outputs and their metrics appear together."""
        with session_scope(self.db_url) as session:
            for sample, prompt, generation in zip(samples, prompts, generations):
                item = store.item_of(session, run_id, sample)
                cut = cuts.get(sample.source_id)
                row = store.new_condition(condition, prompt, generator.count_tokens(prompt),
                                          cut=cut if condition in ("compressed", "infilled") else None)
                scores = score_output(sample.task, condition, generation.text, gold=sample.gold_answer,
                                      reference=sample.reference, original_output=originals.get(sample.source_id),
                                      original_prompt=sample.prompt, backbone=self.backbone,
                                      words=cut.words if cut else None)
                row.outputs.append(store.new_output(config.seed, generation, task=sample.task, condition=condition,
                                                    scores=scores))
                item.conditions.append(row)
            session.flush()

    def _report(self, done: int, total: int, started: float, config: RunSpec, condition: str) -> None:
        elapsed = time.perf_counter() - started
        eta = elapsed / max(done, 1) * (total - done)
        actors = ""
        if self.backend.name == "ray":
            counts = "/".join(str(self.batches_by_actor.get(a, 0)) for a in range(self.backend.actors))
            actors = f" · Ray, {self.backend.actors} actors ({counts} batches)"
        self.say(done / total, f"{done}/{total} · {config.model} · {config.compressor} {config.ratio:g}x · "
                               f"seed {config.seed} · {condition} · ETA {eta:.0f} s · "
                               f"{self.generated_tokens / max(elapsed, 1e-9):.0f} tokens/s{actors}"
                               + (f" · {self.last_note}" if self.last_note else ""))

    def summary(self) -> dict:
        return experiment_summary(self.db_url, self.experiment_id)


def experiment_summary(db_url: str, experiment_id: int) -> dict:
    """Status and, per run and condition, the mean of every metric: the study's table in long form."""
    with session_scope(db_url) as session:
        experiment = session.get(models.Experiment, experiment_id)
        state = experiment_states(session, [experiment_id])[experiment_id]
        rows = session.execute(
            select(models.Run.id, models.Run.model_id, models.Run.compressor, models.Run.ratio_requested,
                   models.Run.seed, models.Item.task, models.Condition.name, models.Metric.reference,
                   models.Metric.name, models.Metric.value)
            .join(models.Item, models.Item.run_id == models.Run.id)
            .join(models.Condition, models.Condition.item_id == models.Item.id)
            .join(models.Output, models.Output.condition_id == models.Condition.id)
            .join(models.Metric, models.Metric.output_id == models.Output.id)
            .where(models.Run.experiment_id == experiment_id)).all()
        groups: dict[tuple, list[float]] = {}
        for run_id, model_id, compressor, ratio, seed, task, condition, reference, name, value in rows:
            groups.setdefault((run_id, model_id, compressor, ratio, seed, task, condition, reference, name),
                              []).append(value)
        table = [{"run_id": k[0], "model": k[1], "compressor": k[2], "ratio": k[3], "seed": k[4], "task": k[5],
                  "condition": k[6], "reference": k[7], "metric": k[8], "mean": sum(v) / len(v), "n": len(v)}
                 for k, v in sorted(groups.items())]
        return {"experiment_id": experiment.id, "name": experiment.name, "status": state["status"],
                "outputs": state["done"], "total_units": experiment.total_units, "error": state["error"],
                "table": table}
