"""What the SmolLM2 diffusion model can do, beside its autoregressive parent: one JSON line per figure.

    python bench/smol_diffusion.py --data ../shared/data --freeform --gsm8k 200 --summaries 100 --chat 20 \
        --infill 200 --heldout 200 --parent --outputs texts.jsonl      # generate (GPU or CPU)
    python bench/smol_diffusion.py --score texts.jsonl                  # ROUGE and BERTScore of the summaries
    python bench/smol_diffusion.py --cpu-speed                          # load and answer times on this CPU

Free-form math is two sets of word problems written by hand and never trained on: bench/data/freeform_math.jsonl
and bench/data/freeform_math_2.jsonl, the second written after phase 5 and not read while choosing later recipes
(its figures are named freeform2_*). GSM8K and
CNN/DailyMail are their test splits; held-out word problems are core.data.wordproblems' held-out split.
Infill: sentences with 30% of their words replaced by as many masks as they had tokens.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data import datasets, wordproblems  # noqa: E402
from core.generation import demo, smol_diffusion  # noqa: E402
from core.generation.generator import LLaDAGenerator  # noqa: E402
from core.llada.sampler import PRESETS, SamplerParams, infill  # noqa: E402
from core.pipeline.math_eval import evaluate  # noqa: E402
from core.pipeline.metrics import extract_answer  # noqa: E402

BENCH_DATA = Path(__file__).parent / "data"
FREEFORM_SETS = {"freeform": BENCH_DATA / "freeform_math.jsonl", "freeform2": BENCH_DATA / "freeform_math_2.jsonl"}
PARENT = "smollm2-135m-instruct"
OUTPUTS: list[Path] = []  # where generated texts go, if anywhere


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def decoding(generator, params) -> dict:
    """How the figure's answers were decoded: the autoregressive control decodes left to right, whatever the
    diffusion sampler's settings say."""
    if generator.info.kind == "ar":
        how = "autoregressive, greedy" if params.temperature == 0 else f"autoregressive, temperature {params.temperature}"
        return {"sampler": how, "gen_length": params.gen_length}
    return {"sampler": params.label(), "gen_length": params.gen_length, "block_length": params.block_length}


def math_accuracy(generator, name: str, label: str, questions, answers, params, outputs, *, batch: int,
                  compressor: str | None = None, instruction: str = "") -> float:
    prompts = [datasets.instructed(instruction, q) for q in questions]
    score = evaluate(generator, prompts, answers, params, compressor=compressor, ratio=2.0 if compressor else None,
                     batch_size=batch)
    emit(figure=f"{label}_accuracy", model=name, value=round(score.accuracy, 4), n=score.n,
         **decoding(generator, params),
         compressor=compressor, achieved_ratio=score.achieved_ratio, seconds=round(score.seconds, 1))
    return score.accuracy


def generate_texts(generator, name: str, task: str, rows: list[dict], prompts: list[str], params, batch: int,
                   outputs: list) -> None:
    started = time.perf_counter()
    for start in range(0, len(prompts), batch):
        for row, out in zip(rows[start:start + batch], generator.generate(prompts[start:start + batch], params, seed=0)):
            outputs.append({"task": task, "model": name, "id": row.get("id"), "prompt": row.get("prompt"),
                            "output": out.text, "reference": row.get("reference")})
    emit(figure=f"{task}_generated", model=name, n=len(prompts), **decoding(generator, params),
         seconds=round(time.perf_counter() - started, 1))
    if OUTPUTS:  # written as they come, so an interrupted run keeps what it made
        with OUTPUTS[0].open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(o) + "\n" for o in outputs[-len(prompts):])


def infill_sentences(data: Path, n: int) -> list[str]:
    """Held-out sentences: half word problems (held-out split), half CNN/DailyMail test sentences."""
    rng = random.Random(0)
    math_qs = [p.question for p in wordproblems.generate(n // 2, "heldout", seed=7)]
    news = []
    for article in read_jsonl(data / "cnndm" / "test.jsonl"):
        news += [s for s in re.split(r"(?<=[.!?])\s+", article["article"]) if 60 < len(s) < 300]
    rng.shuffle(news)
    return math_qs + news[:n - n // 2]


def infill_score(generator, name: str, sentences: list[str]) -> None:
    """Share of masked words restored exactly: 30% of the words of each sentence, each replaced by as
    many masks as it had tokens, filled by the sampler one token a step."""
    tok, model = generator.tokenizer, generator.model
    rng = random.Random(1)
    restored = total = 0
    by_kind = {"math": [0, 0], "news": [0, 0]}
    for index, sentence in enumerate(sentences):
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", sentence)]
        chosen = set(rng.sample(range(len(words)), max(1, round(0.3 * len(words)))))
        enc = tok(sentence, add_special_tokens=False, return_offsets_mapping=True)
        ids = [generator.eos_id] + enc.input_ids
        spans = [None] + [next((w for w, (a, b) in enumerate(words) if a <= (s + e) // 2 < b), None)
                          for s, e in enc.offset_mapping]
        x = torch.tensor([ids], device=generator.device)
        masked = torch.tensor([[s is not None and s in chosen for s in spans]], device=generator.device)
        x_in = torch.where(masked, generator.mask_id, x)
        filled = infill(model, x_in, steps=int(masked.sum()), mask_id=generator.mask_id)
        kind = "math" if index < len(sentences) // 2 else "news"
        for w in chosen:
            positions = [i for i, s in enumerate(spans) if s == w]
            if not positions:
                continue
            ok = bool(torch.equal(filled[0, positions], x[0, positions]))
            restored += ok
            total += 1
            by_kind[kind][0] += ok
            by_kind[kind][1] += 1
    emit(figure="infill_words_restored", model=name, value=round(restored / total, 4), n_words=total,
         n_sentences=len(sentences), math=round(by_kind["math"][0] / max(1, by_kind["math"][1]), 4),
         news=round(by_kind["news"][0] / max(1, by_kind["news"][1]), 4))


def run(args) -> None:
    from core.generation.ar import ARGenerator

    dtype = getattr(torch, args.dtype) if args.dtype else None
    smol = LLaDAGenerator(smol_diffusion.resolve(args.model), args.device, dtype)
    models = [(args.name, smol)]
    if args.parent:
        models.append(("smollm2-parent", ARGenerator(PARENT, args.device)))
    default = PRESETS[smol_diffusion.SMOL_PRESET][1]
    # The reference loop and the fast candidates: the default is the fastest within 2 points of the reference.
    candidates = {"reference_block8": SamplerParams(64, 64, 8), "reference_block32": SamplerParams(64, 64, 32),
                  "exact_fast_block8": SamplerParams(64, 64, 8, mode="fast"),
                  "exact_fast_block32": SamplerParams(64, 64, 32, mode="fast"), "default": default}
    for block in (8, 16, 32):
        for threshold in (0.0, 0.8, 0.9, 0.95, 0.99):
            candidates[f"dual_t{threshold}_block{block}"] = SamplerParams(
                64, 64, block, mode="fast", cache="dual", threshold=threshold, early_stop=True)
        for threshold in (0.9, 0.95):  # parallel decoding with no cache
            candidates[f"nocache_t{threshold}_block{block}"] = SamplerParams(
                64, 64, block, mode="fast", threshold=threshold, early_stop=True)
    if args.samplers:
        wanted = set(args.samplers.split(",")) | {"default"}
        if wanted - set(candidates):
            raise SystemExit(f"unknown samplers {sorted(wanted - set(candidates))}; known: {', '.join(candidates)}")
        candidates = {k: v for k, v in candidates.items() if k in wanted}
    text_params = SamplerParams(128, 128, 32)
    text_fast = SamplerParams(**{**default.to_dict(), "gen_length": 128, "steps": 128, "block_length": 32})
    outputs: list[dict] = []
    if args.outputs:
        args.outputs.write_text("")
        OUTPUTS.append(args.outputs)
    freeform = {set_name: read_jsonl(path) for set_name, path in FREEFORM_SETS.items()} if args.freeform else {}
    for name, generator in models:
        is_ar = generator.info.kind == "ar"
        settings = {"default": default} if is_ar else candidates
        for set_name, problems in freeform.items():
            q, a = [r["question"] for r in problems], [r["answer"] for r in problems]
            for label, params in settings.items():
                math_accuracy(generator, name, f"{set_name}_{label}", q, a, params, outputs, batch=args.batch)
            math_accuracy(generator, name, f"{set_name}_random_drop_ratio2", q, a, settings["default"], outputs,
                          batch=args.batch, compressor="random")
        if args.heldout:
            problems = wordproblems.generate(args.heldout, "heldout", seed=0)
            math_accuracy(generator, name, "wordproblems_heldout", [p.question for p in problems],
                          [p.answer for p in problems], settings["default"], outputs, batch=args.batch)
        if args.gsm8k:
            rows = read_jsonl(args.data / "gsm8k" / "test.jsonl")[:args.gsm8k]
            gold = [r["answer"].split("####")[-1].strip().replace(",", "") for r in rows]
            params = SamplerParams(**{**settings["default"].to_dict(), "gen_length": 128, "steps": 128,
                                      "block_length": 32 if settings["default"].mode == "fast" else 8})
            math_accuracy(generator, name, "gsm8k_test", [r["question"] for r in rows], gold, params, outputs,
                          batch=args.batch)
        if args.summaries:
            rows = read_jsonl(args.data / "cnndm" / "test.jsonl")[:args.summaries]
            instruction = datasets.TASK_INSTRUCTIONS["summarization"]
            prompts = [datasets.instructed(instruction, " ".join(r["article"].split()[:450])) for r in rows]
            generate_texts(generator, name, "summary", rows, prompts, text_fast if not is_ar else text_params,
                           args.batch, outputs)
        if args.chat:
            rows = read_jsonl(args.data / "sharegpt" / "prompts.jsonl")[:args.chat]
            generate_texts(generator, name, "chat", rows, [r["prompt"] for r in rows],
                           text_fast if not is_ar else text_params, args.batch, outputs)
    if args.infill:
        sentences = infill_sentences(args.data, args.infill)
        infill_score(smol, args.name, sentences)
        infill_score(LLaDAGenerator(str(demo.DEMO_DIR), args.device), "math-demo-5.5M", sentences)


def score(path: Path) -> None:
    from core.pipeline import metrics

    outputs = read_jsonl(path)
    backbone = metrics.default_backbone()
    by_model: dict[str, list[dict]] = {}
    for row in outputs:
        if row["task"] == "summary":
            by_model.setdefault(row["model"], []).append(metrics.text_metrics(row["output"], row["reference"], backbone))
    for model, scores in by_model.items():
        for key in ("rouge1", "rouge2", "rougeL", "bertscore_p", "bertscore_r", "bertscore_f1"):
            values = [s[key] for s in scores if key in s]
            if values:
                emit(figure=f"summary_{key}", model=model, value=round(sum(values) / len(values), 4), n=len(values),
                     bertscore_backbone=backbone)


def cpu_speed(args) -> None:
    import subprocess

    code = ("import time, torch; torch.set_num_threads(2); t = time.perf_counter();"
            "from core.generation.generator import LLaDAGenerator; from core.generation.smol_diffusion import SMOL_DIR;"
            "LLaDAGenerator(str(SMOL_DIR), 'cpu'); print(time.perf_counter() - t)")
    for _ in range(2):
        seconds = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                       cwd=str(Path(__file__).resolve().parents[1])).stdout.strip().splitlines()[-1])
        emit(figure="cpu_load_seconds", model="smollm2-diffusion", value=round(seconds, 2))
    torch.set_num_threads(2)
    generator = LLaDAGenerator(str(smol_diffusion.SMOL_DIR), "cpu")
    freeform = read_jsonl(FREEFORM_SETS["freeform"])[:args.speed_problems]
    for label, params in (("default", PRESETS[smol_diffusion.SMOL_PRESET][1]), ("reference", SamplerParams(64, 64, 8))):
        times = []
        for row in freeform:
            started = time.perf_counter()
            out = generator.generate([row["question"]], params, seed=0)[0]
            times.append(time.perf_counter() - started)
            correct = extract_answer(out.text) == str(row["answer"])
            emit(figure="cpu_math_answer_seconds", sampler=label, value=round(times[-1], 2), correct=correct)
        emit(figure="cpu_math_answer_seconds_mean", sampler=params.label(), value=round(sum(times) / len(times), 2),
             n=len(times))
    # The first test article longer than 600 tokens, cut to a 600-token prompt.
    article = next(r["article"] for r in read_jsonl(args.data / "cnndm" / "test.jsonl")
                   if generator.count_tokens(r["article"]) > 620)
    words = article.split()
    while generator.count_tokens(" ".join(words)) > 580:
        words = words[:-5]
    prompt = datasets.instructed(datasets.TASK_INSTRUCTIONS["summarization"], " ".join(words))
    params = SamplerParams(**{**PRESETS[smol_diffusion.SMOL_PRESET][1].to_dict(), "gen_length": 128, "steps": 128,
                              "block_length": 32})
    started = time.perf_counter()
    out = generator.generate([prompt], params, seed=0)[0]
    emit(figure="cpu_summary_seconds", value=round(time.perf_counter() - started, 2),
         prompt_tokens=generator.prompt_length(prompt), gen_length=128, sampler=params.label(),
         forward_calls=out.forward_calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="default: the loader's (bfloat16 on a GPU); float32 is what a CPU runs")
    parser.add_argument("--model", default=smol_diffusion.SMOL_ID, help="the diffusion model's id or folder")
    parser.add_argument("--name", default="smollm2-diffusion", help="its name in the figures")
    parser.add_argument("--samplers", default=None,
                        help="free-form math at these samplers only, comma-separated (the default always runs)")
    parser.add_argument("--freeform", action="store_true")
    parser.add_argument("--heldout", type=int, default=0)
    parser.add_argument("--gsm8k", type=int, default=0)
    parser.add_argument("--summaries", type=int, default=0)
    parser.add_argument("--chat", type=int, default=0)
    parser.add_argument("--infill", type=int, default=0)
    parser.add_argument("--parent", action="store_true", help="also the autoregressive parent, SmolLM2-135M-Instruct")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--outputs", type=Path, default=None, help="write generated texts here (JSONL)")
    parser.add_argument("--score", type=Path, default=None, help="score the summaries of an outputs file")
    parser.add_argument("--cpu-speed", action="store_true")
    parser.add_argument("--speed-problems", type=int, default=5)
    args = parser.parse_args()
    if args.score:
        score(args.score)
    elif args.cpu_speed:
        cpu_speed(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
