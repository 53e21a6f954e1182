"""GPU check of the reference path: checkpoint loading to CUDA in bf16, and the sampler at LLaDA-8B shape.

    python bench/gpu_check.py [--gen 128 --steps 128 --block 32 --prompt-tokens 200]

Prints one JSON line per figure. Weights are random (no LLaDA-8B checkpoint can be had here);
speed does not depend on weight values.
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
from core.generation.demo import build_tiny_checkpoint  # noqa: E402
from core.generation.generator import LLaDAGenerator  # noqa: E402
from core.llada.sampler import SamplerParams, generate  # noqa: E402


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def tiny_checkpoint_on_gpu() -> None:
    ckpt = build_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny", max_shard_bytes=40_000, seed=1)
    params = SamplerParams(gen_length=32, steps=32, block_length=8)
    prompts = ["A water tank holds 1,200 liters. How long does it take to fill?", "Short prompt."]
    gpu = LLaDAGenerator(str(ckpt), "cuda")
    cpu = LLaDAGenerator(str(ckpt), "cpu")
    gpu_fp32 = LLaDAGenerator(str(ckpt), "cuda", dtype=torch.float32)
    out_gpu = gpu.generate(prompts, params, seed=0)
    out_cpu = cpu.generate(prompts, params, seed=0)
    out_fp32 = gpu_fp32.generate(prompts, params, seed=0)
    agree_bf16 = sum(a == b for g, c in zip(out_gpu, out_cpu) for a, b in zip(g.token_ids, c.token_ids))
    emit(figure="tiny_checkpoint_cuda", dtype=gpu.info.dtype, device=gpu.info.device,
         fp32_gpu_equals_cpu=all(g.token_ids == c.token_ids for g, c in zip(out_fp32, out_cpu)),
         bf16_token_agreement=agree_bf16 / (len(prompts) * params.gen_length))


def fast_modes_on_gpu() -> None:
    """Every fast mode with and without its CUDA graph gives the same tokens; the exact one, the reference's."""
    from core.llada import fast, loader

    ckpt = build_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny", max_shard_bytes=40_000, seed=2)
    model = loader.load_llada(ckpt, "cuda", dtype=torch.float32)
    cfg = model.cfg
    ids = dict(mask_id=cfg.mask_token_id, eos_id=cfg.eos_token_id, eot_id=126348)
    prompt = torch.randint(0, cfg.mask_token_id, (3, 21), generator=torch.Generator().manual_seed(0)).cuda()
    mask = torch.ones_like(prompt)
    mask[1, :5] = 0  # a left-padded row
    shape = dict(steps=32, gen_length=32, block_length=8)
    reference = generate(model, prompt, mask, rng=torch.Generator(device="cuda").manual_seed(0), **ids, **shape)
    modes = {"exact": {}, "prefix": {"cache": "prefix"}, "dual": {"cache": "dual"},
             "dual_threshold": {"cache": "dual", "threshold": 0.5, "early_stop": True}, "window": {"window": 8}}
    for name, options in modes.items():
        runs = [fast.generate(model, prompt, mask, rng=torch.Generator(device="cuda").manual_seed(0), cuda_graph=graph,
                              **ids, **shape, **options).canvas for graph in (True, False)]
        emit(figure="fast_mode_cuda_graph_identical", mode=name, value=bool(torch.equal(*runs)),
             equals_reference=bool(torch.equal(runs[0], reference)))


def llada_8b_sampler(gen: int, steps: int, block: int, prompt_tokens: int) -> None:
    model = random_8b()
    cfg = model.cfg
    emit(figure="llada_8b_parameters", value=model.num_parameters(),
         weights_gib=round(torch.cuda.memory_allocated() / 2**30, 2))
    prompt = torch.randint(0, 126000, (1, prompt_tokens), device="cuda")
    with torch.no_grad():
        model(prompt)  # warm-up
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(5):
            model(torch.cat([prompt, torch.full((1, gen), cfg.mask_token_id, device="cuda")], dim=1))
        torch.cuda.synchronize()
    emit(figure="forward_ms", tokens=prompt_tokens + gen, value=round((time.perf_counter() - started) / 5 * 1000, 2))
    for batch in (1, 2):
        torch.cuda.reset_peak_memory_stats()
        prompts = prompt.repeat(batch, 1)
        torch.cuda.synchronize()
        started = time.perf_counter()
        generate(model, prompts, steps=steps, gen_length=gen, block_length=block,
                 rng=torch.Generator(device="cuda").manual_seed(0))
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        emit(figure="reference_sampler", batch=batch, gen=gen, steps=steps, block=block, prompt_tokens=prompt_tokens,
             seconds=round(seconds, 3), s_per_prompt=round(seconds / batch, 3),
             positions_per_s=round(batch * gen / seconds, 1),
             peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--fast-modes-only", action="store_true", help="the correctness checks, not the 8B timing")
    args = parser.parse_args()
    emit(figure="device", name=torch.cuda.get_device_name(0), torch=torch.__version__)
    tiny_checkpoint_on_gpu()
    fast_modes_on_gpu()
    if args.fast_modes_only:
        return
    llada_8b_sampler(args.gen, args.steps, args.block, args.prompt_tokens)


if __name__ == "__main__":
    main()
