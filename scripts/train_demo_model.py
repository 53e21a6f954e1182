"""Train the demo model: a small LLaDA (our own model class) on generated math word problems.

    python scripts/train_demo_model.py --out models/compresslens-math-demo

LLaDA's SFT objective: the prompt is never masked; each answer (worked solution padded with EOS
to ``gen_length``) gets a noise level t ~ U(0, 1), each answer token is masked with probability
t, and the cross-entropy on masked tokens is weighted by 1/t and averaged over answer length.
Fully seeded; the step count, not the clock, fixes the schedule. Written in the hub's
checkpoint layout (config.json, model.safetensors in bf16, tokenizer files) plus training.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data import mathgen  # noqa: E402
from core.generation.generator import LLaDAGenerator  # noqa: E402
from core.llada.loader import save_llada  # noqa: E402
from core.llada.model import LLaDA, LLaDAConfig, init_weights  # noqa: E402
from core.llada.sampler import SamplerParams  # noqa: E402
from core.llada.tokenizer import EOS, MASK, build_bpe_tokenizer, fallback_chat_prompt  # noqa: E402
from core.pipeline.math_eval import evaluate  # noqa: E402

EPS = 1e-3  # smallest masking probability, as in LLaDA's training code


def encode(tokenizer, problems, gen_length: int):
    """(ids, attention_mask, prompt_length) with prompts left-padded by EOS and answers EOS-padded."""
    eos = tokenizer.convert_tokens_to_ids(EOS)
    # The tokenizer's template renders exactly fallback_chat_prompt (a test holds them equal); jinja is slow.
    prompts = tokenizer([fallback_chat_prompt(p.question) for p in problems], add_special_tokens=False).input_ids
    answers = tokenizer([p.solution for p in problems], add_special_tokens=False).input_ids
    if max(len(a) for a in answers) >= gen_length:
        raise SystemExit(f"an answer does not fit in gen_length {gen_length}")
    width = max(len(p) for p in prompts)
    ids = np.full((len(problems), width + gen_length), eos, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, (prompt, answer) in enumerate(zip(prompts, answers)):
        ids[row, width - len(prompt):width + len(answer)] = prompt + answer
        mask[row, width - len(prompt):] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask), width


def sft_loss(model, ids, attention_mask, prompt_width, mask_id, generator):
    B, T = ids.shape
    t = torch.rand(B, 1, device=ids.device, generator=generator)
    p_mask = (1 - EPS) * t + EPS
    masked = torch.rand(B, T, device=ids.device, generator=generator) < p_mask
    masked[:, :prompt_width] = False  # the prompt is never masked
    noisy = torch.where(masked, mask_id, ids)
    logits = model(noisy, attention_mask=attention_mask)
    token_loss = F.cross_entropy(logits[masked].float(), ids[masked], reduction="none") / p_mask.expand(B, T)[masked]
    answer_length = T - prompt_width
    return token_loss.sum() / (answer_length * B)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-problems", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--gen-length", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--mlp", type=int, default=768)
    parser.add_argument("--eval-every", type=int, default=2500)
    parser.add_argument("--eval-problems", type=int, default=200)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    problems = mathgen.generate(args.train_problems, "train", args.seed)
    tokenizer = build_bpe_tokenizer([t for p in problems for t in (p.question, p.solution)], vocab_size=1024,
                                    split_digits=True)
    vocab = tokenizer.get_vocab()
    cfg = LLaDAConfig(d_model=args.d_model, n_heads=args.heads, n_kv_heads=args.heads, n_layers=args.layers,
                      mlp_hidden_size=args.mlp, vocab_size=len(tokenizer), embedding_size=len(tokenizer),
                      max_sequence_length=512, rope_theta=10000.0, mask_token_id=vocab[MASK],
                      eos_token_id=vocab[EOS], pad_token_id=vocab[EOS])
    device = torch.device(args.device)
    model = LLaDA(cfg)
    init_weights(model, args.seed)
    model.to(device).train()
    ids, attention_mask, width = encode(tokenizer, problems, args.gen_length)
    ids, attention_mask = ids.to(device), attention_mask.to(device)
    print(json.dumps({"event": "data", "problems": len(problems), "seq_len": ids.shape[1], "prompt_width": width,
                      "vocab": len(tokenizer), "parameters": model.num_parameters(),
                      "prep_s": round(time.perf_counter() - started, 1)}), flush=True)

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), fused=device.type == "cuda")

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    heldout = mathgen.generate(args.eval_problems, "heldout", args.seed)
    out = Path(args.out)
    rng = torch.Generator(device=device).manual_seed(args.seed)
    history = []
    train_started = time.perf_counter()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        batch = torch.randint(0, ids.shape[0], (args.batch,), device=device, generator=rng)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = sft_loss(model, ids[batch], attention_mask[batch], width, cfg.mask_token_id, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 200 == 0 or step == args.steps - 1:
            print(json.dumps({"event": "train", "step": step, "loss": round(loss.item(), 4), "lr": lr_at(step),
                              "elapsed_s": round(time.perf_counter() - train_started, 1)}), flush=True)
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            save(model, tokenizer, out, args, history)
            score = evaluate(LLaDAGenerator(str(out), str(device)), [p.question for p in heldout],
                             [p.answer for p in heldout], SamplerParams(args.gen_length, args.gen_length, 8),
                             batch_size=100)
            history.append({"step": step + 1, "heldout_accuracy": score.accuracy, "loss": loss.item()})
            print(json.dumps({"event": "eval", **history[-1]}), flush=True)
            model.train()
    save(model, tokenizer, out, args, history, train_seconds=time.perf_counter() - train_started)


def save(model, tokenizer, out: Path, args, history, train_seconds: float | None = None) -> None:
    bf16 = LLaDA(model.cfg)
    bf16.load_state_dict({k: v.detach().to("cpu", torch.bfloat16) for k, v in model.state_dict().items()})
    save_llada(bf16.to(torch.bfloat16), out)
    tokenizer.save_pretrained(str(out))
    record = {"script": "scripts/train_demo_model.py", "args": vars(args), "history": history,
              "parameters": model.num_parameters(), "train_seconds": train_seconds,
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__}
    (out / "training.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
