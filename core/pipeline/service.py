"""The one way through: prompt -> compressor -> generator -> scorer -> database.

The CLI, the worker and the tests all call ``compare``; nothing is stored unless every stage
succeeded, and then the whole run is written in one transaction.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from core.data import datasets
from core.data.datasets import Sample
from core.errors import UserError
from core.generation.generator import Generator, LLaDAGenerator
from core.llada.sampler import PRESETS, SamplerParams
from core.pipeline import compressors, conditions, infill, metrics, store
from db.queries import run_view
from db.session import session_scope

Progress = Callable[[float, str], None]

DEFAULT_MODEL = "GSAI-ML/LLaDA-8B-Instruct"


@dataclass
class CompareRequest:
    prompt: str
    compressor: str = "llmlingua2"
    ratio: float = 2.0
    compressor_params: dict = field(default_factory=dict)
    model: str | None = None
    preset: str | None = None  # None: the model's own default preset
    sampler: dict | None = None  # overrides of the preset's parameters ("custom")
    seed: int = 0
    task: str = "custom"
    source: str = "pasted"
    source_id: str | None = None
    gold_solution: str | None = None
    reference: str | None = None
    bertscore_backbone: str | None = None
    # Always original and compressed; any of the reconstructions of core.pipeline.conditions besides.
    conditions: list[str] = field(default_factory=lambda: ["original", "compressed"])
    infill_length: str = "oracle"
    infill_k: int = infill.DEFAULT_K

    @classmethod
    def from_dict(cls, raw: dict) -> "CompareRequest":
        return cls(**raw)

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved_preset(self) -> str:
        return self.preset or default_preset(self.model or default_model())

    def sampler_params(self) -> SamplerParams:
        preset = self.resolved_preset()
        if preset != "custom" and preset not in PRESETS:
            raise UserError(f"Unknown sampler preset {preset!r}; choose one of: {', '.join(PRESETS)}, custom")
        if self.sampler and preset != "custom":
            raise UserError(f"Sampler parameters override a preset only with preset 'custom', not {preset!r}, "
                            "so that a stored preset name always means its parameters.")
        base = PRESETS[preset][1] if preset in PRESETS else PRESETS[default_preset(self.model or default_model())][1]
        values = {**base.to_dict(), **(self.sampler or {})}
        unknown = sorted(set(values) - set(base.to_dict()))
        if unknown:
            raise UserError(f"Unknown sampler parameter(s): {', '.join(unknown)}")
        try:
            params = SamplerParams(**{k: _coerce(getattr(base, k), v) for k, v in values.items()})
        except (TypeError, ValueError) as exc:
            raise UserError(f"Bad sampler parameter value: {exc}") from None
        problems = params.problems()
        if problems:
            raise UserError("Sampler settings: " + "; ".join(problems))
        return params

    def validate(self) -> None:
        """Everything that can be checked without loading a model; raises UserError."""
        if not self.prompt or not self.prompt.strip():
            raise UserError("The prompt is empty: paste a prompt or sample one.")
        compressors.check_ratio(self.ratio)
        compressors.get_compressor(self.compressor, **self.compressor_params)
        conditions.check(self.conditions)
        if not {"original", "compressed"} <= set(self.conditions):
            raise UserError("A comparison always runs the original and the compressed prompt")
        infill.check_rule(self.infill_length, self.infill_k)
        self.sampler_params()
        datasets.check_task(self.task)


def _coerce(default, value):
    """``value`` in the type of the preset's ``default``, so "64" from a form or a command line is 64."""
    return _as_bool(value) if isinstance(default, bool) else type(default)(value)


def _as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def is_shipped(model_id: str) -> bool:
    """Whether a model id names one of CompressLens's own small models (the demo model, the SmolLM2 one)."""
    from core.generation import demo, smol_diffusion

    return demo.is_demo(model_id) or smol_diffusion.is_smol(model_id)


def is_control(model_id: str) -> bool:
    """Whether a model runs as the autoregressive control; CompressLens's own models never do."""
    from core.generation import ar

    return not is_shipped(model_id) and ar.is_autoregressive(model_id)


def diffusion_dir(model_id: str) -> str:
    """A diffusion model's folder or hub id: CompressLens's own models by their ids, any other as given."""
    from core.generation import demo, smol_diffusion

    return smol_diffusion.resolve(demo.resolve(model_id))


class ModelPool:
    """Owns loaded models across jobs: loading LLaDA-8B takes long, so it happens once."""

    def __init__(self, device: str | None = None):
        self.device = device
        self._generators: dict[str, Generator] = {}
        self._compressors: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def generator(self, model_id: str) -> Generator:
        with self._lock:
            if model_id not in self._generators:
                from core.generation import ar, demo, smol_diffusion

                if is_control(model_id):
                    generator = ar.ARGenerator(model_id, self.device)
                else:
                    generator = LLaDAGenerator(diffusion_dir(model_id), self.device)
                if is_shipped(model_id):
                    generator.info.model_id = model_id
                    note = demo.demo_note if demo.is_demo(model_id) else smol_diffusion.note
                    generator.info.notes.append(note(generator.info.parameters))
                self._generators[model_id] = generator
            return self._generators[model_id]

    def compressor(self, name: str, params: dict, target: str | None = None):
        """The compressor, kept across jobs; one that asks a model gets it from this pool: its own ``model``
        parameter, else ``target`` (the run's model) or the AR control, as the compressor says."""
        key = (name, tuple(sorted((k, repr(v)) for k, v in params.items())), target)
        with self._lock:
            if key not in self._compressors:
                compressor = compressors.get_compressor(name, **params)
                if name == "llmlingua2" and self.device:
                    compressor.device = self.device
                self._compressors[key] = compressor
            compressor = self._compressors[key]
        if isinstance(compressor, compressors.ModelScored) and compressor.scorer is None:
            from core.generation.ar import PACKAGED_SMOLLM2

            default = target if compressor.scorer_model == "target" else PACKAGED_SMOLLM2
            compressor.scorer = self.generator(compressor.model or default or default_model())
        return compressor


def default_model() -> str:
    """COMPRESSLENS_MODEL if set; LLaDA-8B-Instruct when a GPU and its weights are here; else the SmolLM2
    diffusion model, which reads real prompts on a CPU; the 5.5M demo model only without its base package.

    Only a local check: choosing a default never starts a 16 GB download.
    """
    from core.generation import demo, smol_diffusion

    configured = os.environ.get("COMPRESSLENS_MODEL")
    if configured:
        return configured
    import torch

    from core.llada.loader import available_locally

    if torch.cuda.is_available() and available_locally(DEFAULT_MODEL):
        return DEFAULT_MODEL
    return smol_diffusion.SMOL_ID if smol_diffusion.installed() else demo.DEMO_ID


def default_source(model_id: str) -> str:
    """The prompt source a first experiment or sample starts on: one the model can answer part of."""
    from core.generation import demo, smol_diffusion

    if demo.is_demo(model_id):
        return "mathgen"
    return "wordproblems" if smol_diffusion.is_smol(model_id) else "gsm8k"


def default_preset(model_id: str) -> str:
    """The shipped models start on the settings they were measured with; published checkpoints on their papers'
    (LLaDA: the authors' demo setting; LLaDA-1.5, dParallel, iLLaDA and Dream: their GSM8K settings)."""
    from core.generation import demo, smol_diffusion
    from core.llada import families, loader

    if demo.is_demo(model_id):
        return demo.DEMO_PRESET
    if smol_diffusion.is_smol(model_id):
        return smol_diffusion.SMOL_PRESET
    if model_id in families.CHECKPOINT_PRESETS:
        return families.CHECKPOINT_PRESETS[model_id]
    family = loader.family_of(model_id) if model_id else None
    return family.presets[0] if family else "demo"


def model_family(model_id: str):
    """The diffusion family of a model id as the pages name it (the shipped models are LLaDAs), or None."""
    from core.llada import families, loader

    if is_shipped(model_id):
        return families.LLADA
    return loader.family_of(model_id) if model_id else None


def score_output(task: str, condition: str, text: str, *, gold: str | None, reference: str | None,
                 original_output: str | None, original_prompt: str | None, backbone: str,
                 words: list | None = None) -> dict[str, dict[str, float]]:
    """Metric values by reference for one output of one condition.

    A reconstruction is scored against the original prompt (with the share of dropped words and
    numbers it restored, given the compression's ``words``); every other output against the gold
    answer and the reference summary where they exist, and, unless it is the original, against
    the original prompt's output (with answer agreement for math).
    """
    if condition in conditions.RECONSTRUCTIONS:
        versus = metrics.text_metrics(text, original_prompt or "", backbone)
        return {"original_prompt": versus | (infill.restored(words, text) if words else {})}
    scores: dict[str, dict[str, float]] = {}
    if gold is not None:
        scores["gold"] = {"exact_match": metrics.exact_match(metrics.extract_answer(text), gold)}
    if reference:
        scores["reference_summary"] = metrics.text_metrics(text, reference, backbone)
    if condition != "original" and original_output is not None:
        versus = metrics.text_metrics(text, original_output, backbone)
        if task == "math":
            versus["exact_match"] = metrics.exact_match(metrics.extract_answer(text),
                                                        metrics.extract_answer(original_output) or "")
        scores["original_output"] = versus
    return scores


def compare(request: CompareRequest, pool: ModelPool, db_url: str, progress: Progress | None = None) -> dict:
    """Compress, generate on both prompts, score, store; returns the stored run as a view dict."""
    say = progress or (lambda _f, _m: None)
    timings: dict[str, float] = {}
    request.validate()
    params = request.sampler_params()
    model_id = request.model or default_model()
    backbone = request.bertscore_backbone or metrics.default_backbone()

    say(0.02, f"Loading model {model_id}")
    started = time.perf_counter()
    generator = pool.generator(model_id)
    timings["load_model_s"] = time.perf_counter() - started

    prompt = request.prompt
    generator.check_fits([prompt], params)

    say(0.10, f"Compressing with {request.compressor} at ratio {request.ratio:g}")
    compression = pool.compressor(request.compressor, request.compressor_params, model_id).compress(
        prompt, request.ratio, generator.count_tokens)
    timings["compress_s"] = compression.seconds
    if not compression.compressed.strip():
        raise UserError("The compressor removed every word; use a smaller ratio.")

    def on_step(done: int, total: int) -> None:
        say(0.15 + 0.60 * done / total, f"Generating both outputs: step {done}/{total}")

    say(0.15, "Generating both outputs")
    prompts = {"original": prompt, "compressed": compression.compressed}
    outputs = dict(zip(prompts, generator.generate(list(prompts.values()), params, request.seed, on_step)))
    timings["generate_s"] = outputs["original"].seconds
    for condition in [c for c in conditions.CONDITIONS if c in request.conditions and c not in prompts]:
        say(0.78, f"Generating the {condition} condition")
        canvas = (conditions.canvas(compression, request.infill_length, request.infill_k, generator.count_tokens)
                  if condition == "infilled" else None)
        prompts[condition] = conditions.prompt_for(condition, instruction="", prompt=prompt, cut=compression,
                                                   rebuilt={c: g.text for c, g in outputs.items()},
                                                   infill_canvas=canvas)
        [outputs[condition]] = conditions.generate(generator, condition, [prompts[condition]], [canvas], params,
                                                   request.seed)

    say(0.88, f"Scoring (BERTScore: {backbone})")
    started = time.perf_counter()
    gold = metrics.gold_answer(request.gold_solution) if request.gold_solution else None
    scores = {name: score_output(request.task, name, gen.text, gold=gold, reference=request.reference,
                                 original_output=outputs["original"].text, original_prompt=prompt, backbone=backbone,
                                 words=compression.words)
              for name, gen in outputs.items()}
    timings["score_s"] = time.perf_counter() - started

    say(0.97, "Saving the run")
    with session_scope(db_url) as session:
        run = store.new_run(generator.info, kind="compare", preset=request.resolved_preset(),
                            sampler_params=params.to_dict(), seed=request.seed, compressor=compression.compressor,
                            compressor_params=compression.params, ratio=compression.ratio_requested,
                            backbone=backbone, timings=timings)
        item = store.new_item(Sample(request.source, request.source_id, request.task, prompt,
                                     request.gold_solution, request.reference))
        run.items.append(item)
        rows = {
            "original": store.new_condition("original", prompt, compression.original_tokens,
                                            prompt_tokens_cl100k=compression.original_tokens_cl100k),
            "compressed": store.new_condition("compressed", compression.compressed, compression.compressed_tokens,
                                              cut=compression,
                                              prompt_tokens_cl100k=compression.compressed_tokens_cl100k),
        }
        for name, text in prompts.items():
            if name not in rows:
                rows[name] = store.new_condition(name, text, generator.count_tokens(text),
                                                 cut=compression if name == "infilled" else None)
        for name, gen in outputs.items():
            rows[name].outputs.append(store.new_output(request.seed, gen, task=request.task, condition=name,
                                                       scores=scores[name]))
            item.conditions.append(rows[name])
        session.add(run)
        session.flush()
        run_id = run.id
    with session_scope(db_url) as session:
        view = run_view(session, run_id)
    say(1.0, "Done")
    return view
