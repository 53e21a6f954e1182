"""Figures for what only a diffusion model shows: one JSON line per figure.

    python bench/dllm_views.py --compute                  # GPU: what a 2x shorter prompt saves, per sampler mode
    python bench/dllm_views.py --reconstruction [--n 72]  # the SmolLM2 diffusion model on free-form math

``--compute`` runs random LLaDA-8B-shape weights (speed and compute do not depend on weight values
for these exact modes) on prompts as long as the published study's, and on the same prompts
compressed at ratio 2, in every mode, in one call: the share of token positions computed and of
wall time that the shorter prompt saves. Prompt lengths: the mean over the study's 250 sampled
prompts per task in GPT-4 tokens (cl100k; LLaDA's tokenizer is not here), with the task's
instruction, plus LLaDA's chat template (15 tokens), which a compressor does not shorten.

``--reconstruction`` runs the shipped SmolLM2 diffusion model (smol-fast preset) on the hand-written
free-form problems (bench/data/freeform_math.jsonl, never trained on): accuracy on prompts compressed
by random drop, truncation, self_information and dllm_confidence at ratios 1.5, 2 and 3; and for each,
the instruction and infill reconstructions (share of dropped words and numbers restored) and the
accuracy of answering them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.llada.sampler import SamplerParams  # noqa: E402

STUDY_PROMPT_TOKENS = {"math": 81, "summarization": 725, "chat": 59}  # cl100k means, instruction included
CHAT_TEMPLATE_TOKENS = 15
COMPUTE_MODES = {
    "reference": {},
    "fast-exact": {"mode": "fast"},
    "prefix-cache": {"mode": "fast", "cache": "prefix"},
    "dual-cache": {"mode": "fast", "cache": "dual"},
}
FREEFORM = Path(__file__).parent / "data" / "freeform_math.jsonl"
COMPRESSORS = {"random": {"seed": 0}, "truncate": {}, "self_information": {"force_reserve_digit": True},
               "dllm_confidence": {"force_reserve_digit": True}}
RATIOS = (1.5, 2.0, 3.0)


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def compute(gen_length: int, steps: int, block_length: int) -> None:
    from bench.fast_sampler import random_8b
    from core.generation.generator import run_sampler

    model = random_8b()
    cfg = model.cfg

    def run(prompt_tokens: int, mode: dict) -> tuple[float, int, int]:
        prompt = torch.randint(0, 126000, (1, prompt_tokens), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
        params = SamplerParams(gen_length=gen_length, steps=steps, block_length=block_length, **mode)
        torch.cuda.synchronize()
        started = time.perf_counter()
        _, trace = run_sampler(model, prompt, None, params, mask_id=cfg.mask_token_id, eos_id=cfg.eos_token_id,
                               eot_id=126348, rng=torch.Generator(device="cuda").manual_seed(0))
        torch.cuda.synchronize()
        return time.perf_counter() - started, int(trace.positions[0]), trace.forward_calls

    run(64, {"mode": "fast"})  # warm-up: kernels, allocator, graph capture paths
    for task, tokens in STUDY_PROMPT_TOKENS.items():
        full = tokens + CHAT_TEMPLATE_TOKENS
        short = round(tokens / 2) + CHAT_TEMPLATE_TOKENS
        reference_seconds = None
        for name, mode in COMPUTE_MODES.items():
            (s_full, p_full, f_full), (s_short, p_short, f_short) = run(full, mode), run(short, mode)
            reference_seconds = reference_seconds or s_full
            emit(figure="compute_saved_at_ratio_2", task=task, mode=name, prompt_tokens=[full, short],
                 gen_length=gen_length, steps=steps, block_length=block_length,
                 positions_saved=round(1 - p_short / p_full, 4), time_saved=round(1 - s_short / s_full, 4),
                 positions=[p_full, p_short], forward_passes=[f_full, f_short],
                 time_vs_reference_full=round(s_full / reference_seconds, 4),
                 gpu=torch.cuda.get_device_name())


def reconstruction(n: int, device: str | None, batch: int) -> None:
    from core.generation import smol_diffusion
    from core.generation.ar import PACKAGED_SMOLLM2, ARGenerator
    from core.generation.generator import LLaDAGenerator
    from core.llada.sampler import PRESETS
    from core.pipeline import compressors, conditions, infill
    from core.pipeline.metrics import extract_answer

    rows = [json.loads(line) for line in FREEFORM.read_text().splitlines() if line.strip()][:n]
    questions, answers = [r["question"] for r in rows], [str(r["answer"]) for r in rows]
    generator = LLaDAGenerator(smol_diffusion.resolve(smol_diffusion.SMOL_ID), device)
    control = ARGenerator(PACKAGED_SMOLLM2, device)  # the model self_information asks
    params = PRESETS[smol_diffusion.SMOL_PRESET][1]

    def texts_of(run, inputs: list) -> list[str]:
        """``run`` (the generator's generate or infill) over ``inputs`` in batches; the texts."""
        return [g.text for start in range(0, len(inputs), batch) for g in run(inputs[start:start + batch], params, 0)]

    def answered(prompts: list[str]) -> list[str]:
        return texts_of(generator.generate, prompts)

    def accuracy(texts: list[str]) -> float:
        return round(sum(extract_answer(t) == a for t, a in zip(texts, answers)) / len(answers), 4)

    started = time.perf_counter()
    emit(figure="freeform_accuracy", condition="original", value=accuracy(answered(questions)), n=len(questions),
         sampler=params.label())
    for name, options in COMPRESSORS.items():
        compressor = compressors.get_compressor(name, **options)
        if isinstance(compressor, compressors.ModelScored):
            compressor.scorer = generator if compressor.scorer_model == "target" else control
        for ratio in RATIOS:
            cuts = [compressor.compress(q, ratio, generator.count_tokens) for q in questions]
            common = dict(compressor=name, ratio=ratio, n=len(questions),
                          achieved_ratio=round(sum(c.achieved_ratio for c in cuts) / len(cuts), 3))
            emit(figure="freeform_accuracy", condition="compressed",
                 value=accuracy(answered([c.compressed for c in cuts])), **common,
                 forward_passes_per_prompt=sum(c.forward_passes or 0 for c in cuts) / len(cuts))
            rebuilt = {"reconstructed": answered([conditions.prompt_for("reconstructed", instruction="", prompt=q,
                                                                        cut=c, rebuilt={})
                                                  for q, c in zip(questions, cuts)])}
            for rule in infill.LENGTH_RULES:
                canvases = [conditions.canvas(c, rule, infill.DEFAULT_K, generator.count_tokens) for c in cuts]
                rebuilt[f"infilled_{rule}"] = texts_of(generator.infill, canvases)
            for label, texts in rebuilt.items():
                shares = [infill.restored(c.words, t) for c, t in zip(cuts, texts)]
                numbers = [s["dropped_numbers_restored"] for s in shares if "dropped_numbers_restored" in s]
                emit(figure="freeform_reconstruction", reconstruction=label, **common,
                     dropped_words_restored=round(sum(s["dropped_words_restored"] for s in shares) / len(shares), 4),
                     dropped_numbers_restored=round(sum(numbers) / len(numbers), 4) if numbers else None,
                     accuracy_answering_it=accuracy(answered(texts)))
    emit(figure="freeform_reconstruction_seconds", value=round(time.perf_counter() - started, 1),
         device=str(generator.device))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compute", action="store_true")
    parser.add_argument("--gen", default="256/256/32", help="gen_length/steps/block_length for --compute")
    parser.add_argument("--reconstruction", action="store_true")
    parser.add_argument("--n", type=int, default=72, help="free-form problems for --reconstruction")
    parser.add_argument("--device")
    parser.add_argument("--batch", type=int, default=72)
    args = parser.parse_args()
    if args.compute:
        compute(*(int(v) for v in args.gen.split("/")))
    if args.reconstruction:
        reconstruction(args.n, args.device, args.batch)


if __name__ == "__main__":
    main()
