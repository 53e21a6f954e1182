"""Wall time of the issue's reference experiment: 20 GSM8K prompts x 2 ratios x the four conditions
on the demo model, end to end (sampling, compression, generation, scoring, database writes).

    .venv/bin/python bench/experiment_wall.py [--device cpu|cuda] [--batch 20]

Needs GSM8K under COMPRESSLENS_DATA_DIR. One JSON line per figure; the database is a fresh
SQLite file in a temporary folder, so nothing is resumed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.pipeline.experiments import Plan, Runner, find_or_create  # noqa: E402
from core.pipeline.service import ModelPool  # noqa: E402

PLAN = {"name": "gsm8k-20x2x4", "source": "gsm8k", "n_prompts": 20, "ratios": [1.5, 2.0],
        "compressors": [{"name": "random", "params": {"seed": 0}}], "models": ["compresslens/math-demo"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)  # the size of the machines CI and this workplace have
    plan = Plan.from_dict({**PLAN, "batch_size": args.batch})
    with tempfile.TemporaryDirectory() as folder:
        db_url = f"sqlite:///{folder}/bench.db"
        started = time.perf_counter()
        runner = Runner(find_or_create(plan, db_url), ModelPool(args.device), db_url)
        summary = runner.run()
        wall = time.perf_counter() - started
    print(json.dumps({"figure": "experiment_20x2x4_wall_seconds", "value": round(wall, 1), "device": args.device,
                      "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
                      "outputs": summary["outputs"], "status": summary["status"],
                      "generate_seconds": round(runner.generate_seconds, 1),
                      "generated_tokens": runner.generated_tokens}), flush=True)


if __name__ == "__main__":
    main()
