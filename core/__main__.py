"""Command line over the same core the dashboard uses.

    python -m core compare --model DIR_OR_ID --prompt TEXT --compressor NAME --ratio R [--preset NAME] [--seed N] --json
    python -m core worker          # run queued dashboard jobs in this process
"""

from __future__ import annotations

import argparse
import json
import sys

from core.errors import UserError


def parse_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"--compressor-option takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    from core.compressors import REGISTRY
    from core.llada.sampler import PRESETS

    parser = argparse.ArgumentParser(prog="python -m core", description="CompressLens: prompt compression on LLaDA")
    sub = parser.add_subparsers(dest="command", required=True)

    cmp = sub.add_parser("compare", help="compress one prompt, run the model on both, score, store")
    cmp.add_argument("--model", help="LLaDA checkpoint directory or hub id (default: the app's default model); any "
                                     "other causal LM (directory, hub id, .gguf file, or 'smollm2-135m-instruct') "
                                     "runs as the autoregressive control")
    cmp.add_argument("--prompt", help="the prompt text, sent as the single user message")
    cmp.add_argument("--prompt-file", help="read the prompt from this file ('-' for stdin)")
    cmp.add_argument("--compressor", default="llmlingua2", help=f"one of: {', '.join(REGISTRY)}")
    cmp.add_argument("--ratio", type=float, default=2.0, help="target ratio: original tokens / compressed tokens")
    cmp.add_argument("--compressor-option", action="append", default=[], metavar="KEY=VALUE",
                     help="compressor parameter, e.g. force_reserve_digit=true or model=PATH (repeatable)")
    cmp.add_argument("--preset", help=f"sampler preset: {', '.join(PRESETS)}, custom (default: the model's own, "
                                      "'small' for the demo model, else 'demo')")
    cmp.add_argument("--sampler-option", action="append", default=[], metavar="KEY=VALUE",
                     help="override a sampler parameter, e.g. gen_length=64 (repeatable)")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--task", default="custom", help="math | summarization | chat | custom")
    cmp.add_argument("--gold", help="GSM8K-style gold solution or answer (text after '####' is the answer)")
    cmp.add_argument("--reference", help="reference summary")
    cmp.add_argument("--bertscore-backbone", help="BERTScore backbone (default: roberta-large, or MiniLM offline)")
    cmp.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when present)")
    cmp.add_argument("--db", help="SQLAlchemy URL (default: $COMPRESSLENS_DB_URL or the SQLite file)")
    cmp.add_argument("--json", action="store_true", help="print one JSON object")

    wrk = sub.add_parser("worker", help="run queued jobs from the database until interrupted")
    wrk.add_argument("--db", help="SQLAlchemy URL")
    wrk.add_argument("--device")
    return parser


def read_prompt(args) -> str:
    if args.prompt is not None and args.prompt_file:
        raise UserError("Give --prompt or --prompt-file, not both")
    if args.prompt_file:
        if args.prompt_file == "-":
            return sys.stdin.read()
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise UserError(f"Cannot read {args.prompt_file}: {exc.strerror}") from None
    if args.prompt is None:
        raise UserError("Give the prompt with --prompt TEXT or --prompt-file FILE")
    return args.prompt


def run_compare(args) -> int:
    from core import paths
    from core.service import CompareRequest, Engine, compare

    gold = args.gold
    if gold is not None and "####" not in gold:
        gold = f"#### {gold}"
    request = CompareRequest(
        prompt=read_prompt(args), compressor=args.compressor, ratio=args.ratio,
        compressor_params=dict(parse_option(o) for o in args.compressor_option), model=args.model,
        preset=args.preset, sampler=dict(parse_option(o) for o in args.sampler_option) or None, seed=args.seed,
        task=args.task if gold is None or args.task != "custom" else "math", source="cli", gold_solution=gold,
        reference=args.reference, bertscore_backbone=args.bertscore_backbone,
    )

    def progress(fraction: float, message: str) -> None:
        if not args.json:
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr)

    view = compare(request, Engine(args.device), args.db or paths.db_url(), progress)
    if args.json:
        print(json.dumps(view, ensure_ascii=False))
    else:
        print_human(view)
    return 0


def print_human(view: dict) -> None:
    print(f"run {view['run_id']}  model {view['model']['id']}  {view['compressor']} "
          f"asked {view['ratio_requested']:g}x achieved {view['ratio_achieved']:.2f}x "
          f"({view['prompt_tokens']['original']} -> {view['prompt_tokens']['compressed']} tokens)")
    for note in view["model"]["notes"]:
        print(f"note: {note}")
    print(f"\ncompressed prompt:\n{view['compressed_prompt']}\n")
    print(f"output on original prompt:\n{view['original_output']}\n")
    print(f"output on compressed prompt:\n{view['compressed_output']}\n")
    for condition, tables in view["metrics"].items():
        for reference, values in tables.items():
            shown = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
            print(f"{condition} vs {reference}: {shown}")


def run_worker(args) -> int:
    from core import paths
    from core.service import Engine
    from core.worker import Worker

    worker = Worker(args.db or paths.db_url(), Engine(args.device))
    print(f"worker serving {worker.db_url}; Ctrl-C stops it", file=sys.stderr)
    try:
        worker.serve()
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "compare":
            return run_compare(args)
        return run_worker(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
