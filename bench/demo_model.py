"""The demo model on held-out generated problems: accuracy with and without compression, and CPU speed.

    .venv/bin/python bench/demo_model.py [--problems 500] [--device cpu]

One JSON line per figure. Accuracy is exact match of the extracted final answer, at the demo
model's default sampler preset, on held-out problems (no template instance seen in training).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data import mathgen  # noqa: E402
from core.generation import demo  # noqa: E402
from core.generation.generator import LLaDAGenerator  # noqa: E402
from core.llada.sampler import PRESETS  # noqa: E402
from core.pipeline.math_eval import evaluate  # noqa: E402


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=500, help="0 measures speed only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)  # the size of the machines this is meant for
    params = PRESETS[demo.DEMO_PRESET][1]

    started = time.perf_counter()
    generator = LLaDAGenerator(str(demo.DEMO_DIR), args.device)
    emit(figure="load_seconds", value=round(time.perf_counter() - started, 3), device=args.device,
         parameters=generator.info.parameters)

    timed = [p.question for p in mathgen.generate(6, "heldout", seed=0)]
    generator.generate(timed[:1], params, seed=0)  # warm-up
    started = time.perf_counter()
    for question in timed[1:]:
        generator.generate([question], params, seed=0)
    emit(figure="seconds_per_problem_batch1", value=round((time.perf_counter() - started) / 5, 3),
         gen_length=params.gen_length, steps=params.steps, device=args.device)

    heldout = mathgen.generate(args.problems, "heldout", seed=0)
    questions, answers = [p.question for p in heldout], [p.answer for p in heldout]
    if not questions:
        return
    original = evaluate(generator, questions, answers, params, batch_size=args.batch)
    emit(figure="accuracy_original", value=original.accuracy, n=original.n, preset=demo.DEMO_PRESET,
         seconds=round(original.seconds, 1))
    dropped = evaluate(generator, questions, answers, params, compressor="random", ratio=2.0, batch_size=args.batch)
    emit(figure="accuracy_random_drop_ratio2", value=dropped.accuracy, n=dropped.n,
         achieved_ratio=round(dropped.achieved_ratio, 3), seconds=round(dropped.seconds, 1))
    emit(figure="accuracy_drop_points", value=round(100 * (original.accuracy - dropped.accuracy), 1))


if __name__ == "__main__":
    main()
