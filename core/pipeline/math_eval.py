"""Exact-match accuracy of a generator on math problems, with or without compressing the prompts."""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.generation.generator import Generator
from core.llada.sampler import SamplerParams
from core.pipeline.compressors import get_compressor
from core.pipeline.metrics import extract_answer


@dataclass
class MathScore:
    n: int
    correct: int
    seconds: float
    compressor: str | None
    ratio: float | None
    achieved_ratio: float | None

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


def evaluate(generator: Generator, questions: list[str], answers: list[int], params: SamplerParams, *,
             compressor: str | None = None, ratio: float | None = None, seed: int = 0,
             batch_size: int = 32) -> MathScore:
    prompts = list(questions)
    achieved = None
    if compressor is not None:
        # One seeded compressor per prompt index, so the same problem is always cut the same way.
        cuts = [get_compressor(compressor, **({"seed": seed + i} if compressor == "random" else {}))
                .compress(q, ratio, generator.count_tokens) for i, q in enumerate(questions)]
        prompts = [c.compressed for c in cuts]
        achieved = sum(c.achieved_ratio for c in cuts) / len(cuts)
    started = time.perf_counter()
    correct = 0
    for start in range(0, len(prompts), batch_size):
        outputs = generator.generate(prompts[start:start + batch_size], params, seed)
        for output, answer in zip(outputs, answers[start:start + batch_size]):
            correct += extract_answer(output.text) == str(answer)
    return MathScore(len(prompts), correct, time.perf_counter() - started, compressor, ratio, achieved)
