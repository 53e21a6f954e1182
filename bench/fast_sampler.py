"""Speed of every sampler mode at LLaDA-8B shape on the GPU, against the reference loop in the same call.

    python3 bench/fast_sampler.py --shapes 256/256/8,256/256/32,128/128/32 --batches 1,8 [--json OUT.json]
    python3 bench/fast_sampler.py --demo-agreement 500      # agreement with the reference on the demo model
    python3 bench/fast_sampler.py --study 250               # a 250-prompt x 2-condition run, fastest mode

Weights are random bf16 built on the GPU (no LLaDA-8B checkpoint exists here; speed does not depend
on weight values, except where a mode stops early: random weights are never confident and never
say EOS, so threshold decoding commits one token per step and early stop never fires; the demo
model's agreement run measures those modes' forward passes on a model that was trained).
One JSON line per case; speedups are against the reference mode at batch 1 of the same shape.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.generation.generator import run_sampler  # noqa: E402
from core.llada.model import LLaDA, LLaDAConfig  # noqa: E402
from core.llada.sampler import PRESETS, SamplerParams  # noqa: E402

MODES = {
    "reference": {},
    "fast-exact": {"mode": "fast"},
    "prefix-cache": {"mode": "fast", "cache": "prefix"},
    "dual-cache": {"mode": "fast", "cache": "dual"},
    "window-32": {"mode": "fast", "window": 32},
    # the gsm8k-fast preset's decoding
    "fastest": {k: getattr(PRESETS["gsm8k-fast"][1], k) for k in ("mode", "cache", "threshold", "early_stop")},
    "dual+threshold0.9+stop": {"mode": "fast", "cache": "dual", "threshold": 0.9, "early_stop": True},
    "prefix+threshold0.9+stop": {"mode": "fast", "cache": "prefix", "threshold": 0.9, "early_stop": True},
}
PROMPT_TOKENS = 200  # a GSM8K question in LLaDA's chat template is about this long

rows: list[dict] = []
baselines: dict[tuple[int, int, int], float] = {}  # reference s/prompt at batch 1, per shape, this call


def emit(**fields) -> None:
    rows.append(fields)
    print(json.dumps(fields), flush=True)


def random_8b(cfg: LLaDAConfig | None = None) -> LLaDA:
    """Random bf16 weights on the GPU at LLaDA-8B's shape, or at ``cfg``'s."""
    cfg = cfg or LLaDAConfig()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LLaDA(cfg).to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.eval()


def run(model: LLaDA, prompts: torch.Tensor, params: SamplerParams) -> tuple[torch.Tensor, int]:
    """The canvas and the forward passes it took."""
    cfg = model.cfg
    canvas, trace = run_sampler(model, prompts, None, params, mask_id=cfg.mask_token_id, eos_id=cfg.eos_token_id,
                                eot_id=126348, rng=torch.Generator(device="cuda").manual_seed(0))
    return canvas, trace.forward_calls


def speed(model: LLaDA, shapes: list[tuple[int, int, int]], batches: list[int], modes: list[str]) -> None:
    prompt = torch.randint(0, 126000, (1, PROMPT_TOKENS), device="cuda")
    run(model, prompt, SamplerParams(32, 32, 32, mode="fast"))  # warm-up: kernels, allocator
    for gen, steps, block in shapes:
        outputs = {}
        for batch in batches:
            prompts = prompt.repeat(batch, 1)
            for name in modes:
                params = SamplerParams(gen, steps, block, **MODES[name])
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                started = time.perf_counter()
                out, calls = run(model, prompts, params)
                torch.cuda.synchronize()
                seconds = time.perf_counter() - started
                answer = out[:, PROMPT_TOKENS:]
                non_eos = int((answer != model.cfg.eos_token_id).sum())
                if name == "reference" and batch == 1:
                    baselines[(gen, steps, block)] = seconds
                baseline = baselines.get((gen, steps, block))
                outputs[(name, batch)] = answer[:1]
                same = None
                if not params.approximate and ("reference", batch) in outputs:
                    same = bool(torch.equal(answer[:1], outputs[("reference", batch)]))
                emit(case="speed", mode=name, label=params.label(), gen=gen, steps=steps, block=block, batch=batch,
                     prompt_tokens=PROMPT_TOKENS, s_per_prompt=round(seconds / batch, 4),
                     positions_per_s=round(batch * gen / seconds, 1), non_eos_tokens_per_s=round(non_eos / seconds, 1),
                     forward_calls=calls, peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                     speedup=round(baseline / (seconds / batch), 2) if baseline else None,
                     identical_to_reference=same)


def study(model: LLaDA, prompts_per_condition: int, batch: int, mode: str) -> None:
    """A GSM8K-sized run: prompts x 2 conditions at gen 256, batched, halving the batch on out-of-memory."""
    params = SamplerParams(256, 256, 32, **MODES[mode])
    total = 2 * prompts_per_condition
    prompts = torch.randint(0, 126000, (total, PROMPT_TOKENS), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    done, calls = 0, 0
    while done < total:
        chunk = prompts[done:done + batch]
        try:
            _, used = run(model, chunk, params)
        except torch.cuda.OutOfMemoryError:
            batch //= 2
            print(json.dumps({"note": f"out of memory; batch halved to {batch}"}), flush=True)
            continue
        done += len(chunk)
        calls += used
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    emit(case="study", mode=mode, label=params.label(), prompts=total, gen=256, batch=batch,
         seconds=round(seconds, 1), s_per_prompt=round(seconds / total, 4), forward_calls=calls,
         peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))


def demo_agreement(problems: int, batch: int) -> None:
    """Each mode against the reference on the demo model's held-out problems: accuracy, same final
    answer, token overlap, forward passes."""
    from core.data import mathgen
    from core.generation import demo
    from core.generation.generator import LLaDAGenerator
    from core.pipeline.metrics import extract_answer

    generator = LLaDAGenerator(str(demo.DEMO_DIR), "cuda")
    heldout = mathgen.generate(problems, "heldout", seed=0)
    questions, answers = [p.question for p in heldout], [str(p.answer) for p in heldout]
    small = SamplerParams(64, 64, 8)
    results = {}
    for name, options in MODES.items():
        params = SamplerParams(small.gen_length, small.steps, small.block_length, **options)
        started = time.perf_counter()
        outputs = []
        for start in range(0, len(questions), batch):
            outputs += generator.generate(questions[start:start + batch], params, seed=0)
        seconds = time.perf_counter() - started
        results[name] = outputs
        reference = results["reference"]
        same_answer = sum(extract_answer(a.text) == extract_answer(b.text) for a, b in zip(outputs, reference))
        overlap = sum(sum(x == y for x, y in zip(a.token_ids, b.token_ids)) for a, b in zip(outputs, reference))
        correct = sum(extract_answer(o.text) == a for o, a in zip(outputs, answers))
        emit(case="demo_agreement", mode=name, label=params.label(), problems=len(questions),
             accuracy=round(correct / len(questions), 4),
             same_final_answer=round(same_answer / len(questions), 4),
             token_overlap=round(overlap / (len(questions) * small.gen_length), 4),
             forward_calls_per_batch=round(sum(o.forward_calls for o in outputs[::batch]) /
                                           len(outputs[::batch]), 1),
             seconds=round(seconds, 2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="", help="gen/steps/block, comma separated")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--big-batch", type=int, default=0, help="also this batch, for the fastest modes")
    parser.add_argument("--study", type=int, default=0, help="prompts per condition")
    parser.add_argument("--study-batch", type=int, default=32)
    parser.add_argument("--study-mode", default="fastest")
    parser.add_argument("--demo-agreement", type=int, default=0, help="held-out problems")
    parser.add_argument("--json", help="also write every line to this file")
    args = parser.parse_args()
    emit(case="device", gpu=torch.cuda.get_device_name(), torch=torch.__version__)
    if args.demo_agreement:
        demo_agreement(args.demo_agreement, batch=50)
    if args.shapes or args.study:
        model = random_8b()
        shapes = [tuple(int(v) for v in s.split("/")) for s in args.shapes.split(",") if s]
        speed(model, shapes, [int(b) for b in args.batches.split(",")], args.modes.split(","))
        if args.big_batch:  # the batched fast modes only: the reference's full logits make big batches slow
            speed(model, shapes, [args.big_batch], ["dual-cache", "fastest"])
        if args.study:
            study(model, args.study, args.study_batch, args.study_mode)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
