"""Speed and memory of each diffusion family at its real shape on the GPU: the family's reference loop against
its fastest exact mode, at gen 256, in one call.

    python3 bench/families.py --batches 1,16 [--json OUT.json]

Weights are random bf16 built on the GPU (no checkpoint is downloadable here; speed does not depend on the
values). Shapes: LLaDA-8B (LLaDA-1.5 and dParallel-LLaDA share it) and Dream-v0-7B from their published
configs; iLLaDA-8B with the fields its card gives (8 KV heads, tied head, vocab 155136) and a Llama-3-8B body
(d 4096, 32 layers, MLP 14336), which is what its 7.6B parameters imply. Dream has no fast mode of its own: its
sampler is both its reference and its fastest exact loop. The mixture-of-experts families at their configs'
shapes: LLaDA-MoE-7B-A1B (LLaDA's reference loop, its only one) and LLaDA2.x-mini (its block sampler without and
with the exact block cache, threshold 0.95; random weights commit one token a step, so every case makes the same
number of forward passes). One JSON line per case; ratios are against the family's reference at batch 1 in the
same call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fast_sampler import random_8b  # noqa: E402
from core.generation.generator import run_sampler  # noqa: E402
from core.llada import families  # noqa: E402
from core.llada.model import LLaDA, LLaDAConfig  # noqa: E402
from core.llada.moe import MoELLaDA  # noqa: E402
from core.llada.sampler import SamplerParams  # noqa: E402

PROMPT_TOKENS = 200
SHAPES = {
    "llada": LLaDAConfig(),
    "illada": families.llada_config({"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
                                     "num_hidden_layers": 32, "intermediate_size": 14336, "vocab_size": 155136,
                                     "tie_word_embeddings": True, "rope_theta": 500000.0, "mask_token_id": 5,
                                     "eos_token_id": 2, "pad_token_id": 1}, families.ILLADA),
    "dream": families.llada_config({"hidden_size": 3584, "num_attention_heads": 28, "num_key_value_heads": 4,
                                    "num_hidden_layers": 28, "intermediate_size": 18944, "vocab_size": 152064,
                                    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "mask_token_id": 151666,
                                    "eos_token_id": 151643, "pad_token_id": 151643}, families.DREAM),
    "llada-moe": families.moe_config({"hidden_size": 2048, "num_attention_heads": 16, "num_hidden_layers": 16,
                                      "vocab_size": 157184, "num_experts": 64, "num_experts_per_tok": 8,
                                      "expert_intermediate_size": 1024, "rope_theta": 50000.0,
                                      "max_position_embeddings": 8192, "eos_token_id": 156892,
                                      "pad_token_id": 156892}, families.LLADA_MOE),
    "llada2": families.llada2_config({"hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 4,
                                      "head_dim": 128, "num_hidden_layers": 20, "intermediate_size": 5120,
                                      "moe_intermediate_size": 512, "num_experts": 256, "num_experts_per_tok": 8,
                                      "num_shared_experts": 1, "n_group": 8, "topk_group": 4,
                                      "routed_scaling_factor": 2.5, "first_k_dense_replace": 1,
                                      "partial_rotary_factor": 0.5, "rope_theta": 600000, "vocab_size": 157184,
                                      "pad_token_id": 156892}, families.LLADA2),
}
LOOPS = {
    "llada": {"reference": SamplerParams(gen_length=256, steps=256, block_length=32),
              "fast-exact": SamplerParams(gen_length=256, steps=256, block_length=32, mode="fast")},
    "dream": {"dream": SamplerParams(gen_length=256, steps=256, block_length=256, mode="dream", alg="entropy")},
}
LOOPS["illada"] = LOOPS["llada"]
LOOPS["llada-moe"] = {"reference": LOOPS["llada"]["reference"]}
LOOPS["llada2"] = {cache: SamplerParams(gen_length=256, steps=32, block_length=32, mode="block", threshold=0.95,
                                        cache=cache) for cache in ("none", "block")}


def random_mixture(cfg) -> MoELLaDA:
    """Random bf16 weights built on the GPU, never in float32 first (16B parameters)."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = MoELLaDA(cfg)
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.eval()


def emit(out: Path | None, **fields) -> None:
    print(json.dumps(fields), flush=True)
    if out is not None:  # line by line, so a call cut short keeps what it measured
        with out.open("a") as f:
            f.write(json.dumps(fields) + "\n")


def time_loop(model: LLaDA | MoELLaDA, params: SamplerParams, batch: int) -> tuple[float, int, int]:
    cfg = model.cfg
    prompt = torch.randint(0, cfg.vocab_size - 1000, (batch, PROMPT_TOKENS), device="cuda",
                           generator=torch.Generator("cuda").manual_seed(batch))
    run = lambda: run_sampler(model, prompt, None, params, mask_id=cfg.mask_token_id,  # noqa: E731
                              eos_id=cfg.eos_token_id, eot_id=cfg.eos_token_id,
                              rng=torch.Generator("cuda").manual_seed(0))[1]
    warm_up = SamplerParams(**{**params.to_dict(), "steps": params.gen_length // params.block_length})
    run_sampler(model, prompt, None, warm_up, mask_id=cfg.mask_token_id, eos_id=cfg.eos_token_id,
                eot_id=cfg.eos_token_id)  # kernels and CUDA graphs of the same shapes, in a few steps
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trace = run()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / batch, torch.cuda.max_memory_allocated(), trace.forward_calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", default=",".join(SHAPES))
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--json", help="also write every line to this file")
    args = parser.parse_args()
    out = Path(args.json) if args.json else None
    emit(out, case="device", gpu=torch.cuda.get_device_name(), torch=torch.__version__)
    for family in args.families.split(","):
        model = random_mixture(SHAPES[family]) if family in ("llada-moe", "llada2") else random_8b(SHAPES[family])
        emit(out, case="model", family=family, parameters=model.num_parameters(),
             weights_gib=round(torch.cuda.memory_allocated() / 2**30, 2))
        baseline = None
        for loop, params in LOOPS[family].items():
            for batch in (int(b) for b in args.batches.split(",")):
                seconds, peak, passes = time_loop(model, params, batch)
                baseline = baseline or seconds
                emit(out, case="speed", family=family, loop=loop, label=params.label(), gen_length=256,
                     steps=params.steps, batch=batch, s_per_prompt=round(seconds, 4),
                     speedup=round(baseline / seconds, 2), forward_passes=passes, peak_gib=round(peak / 2**30, 2))
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
