"""Experiment throughput through the Ray backend against the single worker, and its scaling over GPUs.

    python3 bench/ray_scaling.py --gpus 2 --prompts 8 --json OUT.jsonl          # on a machine with 2 GPUs
    python3 bench/ray_scaling.py --gpus 2 --samplers gsm8k-fast,exact-fast      # the fastest approximate and exact
    python3 bench/ray_scaling.py --shape tiny --device cpu --gpus 2 --prompts 4  # the same path on a CPU

One call. A checkpoint of random bf16 weights is written at the shape (LLaDA-8B's body; its tokenizer a
32k BPE learned on the study's sources, with LLaDA's special tokens), and the published study's sources
(GSM8K, CNN/DailyMail and ShareGPT test prompts, ``--prompts`` of each, the study's gen 256) run on the
original condition through the experiment runner: on the single worker, on Ray with one actor, and on Ray
with ``--gpus`` actors when that is more than one, for each of ``--samplers``: preset names, or
``exact-fast`` (the fast loop with nothing approximate: the reference's tokens). Timing starts once
every actor holds the model. One JSON line per run: prompts/s; Ray's overhead against the single
worker; scaling efficiency, the rate of N actors over N times one actor's. Every run's outputs are
checked identical to the single worker's under the same sampler.
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

from bench.fast_sampler import random_8b  # noqa: E402
from core.data import datasets  # noqa: E402
from core.generation.demo import build_tiny_checkpoint  # noqa: E402
from core.llada.loader import save_llada  # noqa: E402
from core.llada.model import LLaDAConfig  # noqa: E402
from core.llada.tokenizer import EOS, MASK, build_bpe_tokenizer  # noqa: E402
from core.pipeline import metrics  # noqa: E402
from core.pipeline.backends import LocalBackend, RayBackend  # noqa: E402
from core.pipeline.experiments import Plan, Runner, find_or_create, sample_prompts  # noqa: E402
from core.pipeline.service import ModelPool  # noqa: E402
from db import models  # noqa: E402
from db.session import session_scope  # noqa: E402

STUDY_SOURCES = ("gsm8k", "cnndm", "sharegpt")


def emit(out: Path | None, **fields) -> None:
    print(json.dumps(fields), flush=True)
    if out is not None:
        with out.open("a") as f:
            f.write(json.dumps(fields) + "\n")


def study_tokenizer():
    """A BPE learned on the study's sources, so that their prompts are about as many tokens as under LLaDA's own
    tokenizer, which cannot be downloaded here (on 100 prompts of each source, 92-98% of cl100k's counts)."""
    texts = [sample.prompt for source in STUDY_SOURCES for sample in datasets.load_source(source)]
    return build_bpe_tokenizer(texts, vocab_size=32768, with_chat_template=True)


def random_checkpoint(folder: Path, shape: str) -> Path:
    if shape == "tiny":  # its small tokenizer makes long prompts: room for the longest articles
        return build_tiny_checkpoint(folder, seed=0, max_sequence_length=8192)
    tokenizer = study_tokenizer()
    vocab = tokenizer.get_vocab()
    cfg = LLaDAConfig(vocab_size=len(tokenizer), embedding_size=len(tokenizer), mask_token_id=vocab[MASK],
                      eos_token_id=vocab[EOS], pad_token_id=vocab[EOS], max_sequence_length=8192)
    model = random_8b(cfg)
    save_llada(model, folder, max_shard_bytes=2 << 30)
    tokenizer.save_pretrained(str(folder))
    del model
    torch.cuda.empty_cache()
    return folder


def outputs(db_url: str) -> dict:
    with session_scope(db_url) as session:
        rows = session.execute(select_outputs()).all()
    return {(key, condition, source): text for key, condition, source, text in rows}


def select_outputs():
    from sqlalchemy import select

    return (select(models.Run.config_key, models.Condition.name, models.Item.source_id, models.Output.text)
            .join(models.Condition, models.Condition.id == models.Output.condition_id)
            .join(models.Item, models.Item.id == models.Condition.item_id)
            .join(models.Run, models.Run.id == models.Item.run_id))


def timed_run(plan: Plan, backend, pool: ModelPool, work: Path, name: str) -> tuple[float, dict, dict]:
    db = f"sqlite:///{work / (name + '.db')}"
    runner = Runner(find_or_create(plan, db), pool, db, backend=backend)
    started = time.perf_counter()
    runner.run()
    return time.perf_counter() - started, outputs(db), runner.batches_by_actor


EXACT_FAST = {"mode": "fast", "block_length": 32}  # nothing approximate: the reference loop's tokens


def plan_for(sampler: str, checkpoint: str, args) -> Plan:
    tasks = ("math", "summarization", "chat")
    choice = {"preset": "custom", "sampler": EXACT_FAST} if sampler == "exact-fast" else {"preset": sampler}
    return Plan(name=f"ray scaling {sampler}", source=list(STUDY_SOURCES), n_prompts=args.prompts,
                compressors=[{"name": "random", "params": {}}], conditions=["original"], models=[checkpoint],
                gen_length={t: args.gen_length for t in tasks}, batch_size=args.batch_size, **choice)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, default=1, help="Ray actors of the scaling run (one per GPU)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts of each of the study's three sources")
    parser.add_argument("--shape", choices=("llada-8b", "tiny"), default="llada-8b")
    parser.add_argument("--samplers", default="gsm8k-fast", help="comma-separated: preset names (gsm8k-fast: the "
                        "fastest approximate; demo: the reference loop) or exact-fast")
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write every line to this file")
    args = parser.parse_args()
    samplers = [name.strip() for name in args.samplers.split(",") if name.strip()]
    work = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    checkpoint = str(random_checkpoint(work / "model", args.shape))
    plans = {sampler: plan_for(sampler, checkpoint, args) for sampler in samplers}
    for plan in plans.values():
        plan.validate()
    prompts = 3 * args.prompts
    pool = ModelPool(args.device)
    generator = pool.generator(checkpoint)  # loaded before the clock starts, as the actors' models are
    lengths = {}
    for sample in sample_prompts(next(iter(plans.values()))):
        lengths.setdefault(sample.source, []).append(generator.count_tokens(sample.prompt))
    emit(args.json, case="setup", device=torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
         gpus=args.gpus, prompts=prompts, shape=args.shape, samplers=samplers, gen_length=args.gen_length,
         mean_prompt_tokens={source: round(sum(n) / len(n)) for source, n in lengths.items()},
         torch=torch.__version__)
    metrics.text_metrics("warm", "warm", metrics.default_backbone())  # and the scorer the coordinator uses
    single = {}
    for sampler, plan in plans.items():
        seconds, stored, _ = timed_run(plan, LocalBackend(pool), pool, work, f"{sampler}-single")
        single[sampler] = (prompts / seconds, stored)
        emit(args.json, case="single worker", sampler=sampler, prompts_per_s=round(prompts / seconds, 3),
             seconds=round(seconds, 1))
    one_actor = {}
    for actors in sorted({1, args.gpus}):  # one backend at a time: together they would want more GPUs than exist
        backend = RayBackend(actors)
        backend.warm(checkpoint)
        for sampler, plan in plans.items():
            seconds, stored, batches = timed_run(plan, backend, pool, work, f"{sampler}-ray{actors}")
            rate = prompts / seconds
            base = one_actor.setdefault(sampler, rate)
            emit(args.json, case="ray", sampler=sampler, actors=actors, prompts_per_s=round(rate, 3),
                 seconds=round(seconds, 1), overhead_vs_single=round(1 - rate / single[sampler][0], 4),
                 speedup_vs_one_actor=round(rate / base, 3), scaling_efficiency=round(rate / (actors * base), 3),
                 same_outputs=stored == single[sampler][1], batches_by_actor=[batches.get(a, 0) for a in range(actors)],
                 peak_gib_per_actor=[None if b is None else round(b / 2**30, 2) for b in backend.peak_memory()])
        backend.shutdown()


if __name__ == "__main__":
    main()
