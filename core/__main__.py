"""Command line over the same core the dashboard uses.

    python -m core compare --model DIR_OR_ID --prompt TEXT --compressor NAME --ratio R [--preset NAME] [--seed N] --json
    python -m core experiment --plan PLAN.json [--backend ray [--actors N]] [--json]   # again to resume
    python -m core export --experiment ID --format csv|jsonl
    python -m core worker          # run queued dashboard jobs in this process
    python -m core users add NAME --role reviewer|annotator   # then: invite, list, revoke, disable, enable, password
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
    from core.llada.sampler import PRESETS
    from core.pipeline.compressors import REGISTRY

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
                                      "'small' for the demo model, 'smol-fast' for compresslens/smollm2-diffusion, else 'demo')")
    cmp.add_argument("--sampler-option", action="append", default=[], metavar="KEY=VALUE",
                     help="override a sampler parameter, e.g. gen_length=64 (repeatable)")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--conditions", default="original,compressed",
                     help="comma separated: original and compressed, and any of reconstructed, "
                          "reasoning_on_reconstructed, infilled, reasoning_on_infilled")
    cmp.add_argument("--infill-length", default="oracle", help="masks per gap of the infill: oracle | fixed")
    cmp.add_argument("--infill-k", type=int, default=2, help="masks per gap under --infill-length fixed")
    cmp.add_argument("--task", default="custom", help="math | summarization | chat | custom")
    cmp.add_argument("--gold", help="GSM8K-style gold solution or answer (text after '####' is the answer)")
    cmp.add_argument("--reference", help="reference summary")
    cmp.add_argument("--bertscore-backbone", help="BERTScore backbone (default: roberta-large, or MiniLM offline)")
    cmp.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when present)")
    cmp.add_argument("--db", help="SQLAlchemy URL (default: $COMPRESSLENS_DB_URL or the SQLite file)")
    cmp.add_argument("--json", action="store_true", help="print one JSON object")
    cmp.add_argument("--trajectory", action="store_true",
                     help="also give each output token's commit step and probability (under 'trajectories' with "
                          "--json)")

    exp = sub.add_parser("experiment", help="run a plan headless; run it again to resume it")
    exp.add_argument("--plan", required=True, help="JSON file with the plan (see core/pipeline/experiments.py: Plan)")
    exp.add_argument("--device")
    exp.add_argument("--db", help="SQLAlchemy URL")
    exp.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    exp.add_argument("--backend", choices=("local", "ray"),
                     help="where the generations run (default: the plan's, else local); ray: Ray actors on this "
                          "machine, or on the cluster at $COMPRESSLENS_RAY_ADDRESS")
    exp.add_argument("--actors", type=int, help="Ray actors (default: one per GPU, or two without GPUs)")

    exq = sub.add_parser("export", help="every output of an experiment with its metrics")
    exq.add_argument("--experiment", type=int, required=True)
    exq.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    exq.add_argument("--db", help="SQLAlchemy URL")

    wrk = sub.add_parser("worker", help="run queued jobs from the database until interrupted")
    wrk.add_argument("--db", help="SQLAlchemy URL")
    wrk.add_argument("--device")

    usr = sub.add_parser("users", help="accounts for a server with authentication on (reviewers, annotators)")
    usr.add_argument("--db", help="SQLAlchemy URL")
    actions = usr.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create an account (a reviewer is asked for a password)")
    add.add_argument("name")
    add.add_argument("--role", choices=("reviewer", "annotator"), required=True)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    add.add_argument("--invite", action="store_true", help="also print an invite link (what annotators use)")
    inv = actions.add_parser("invite", help="a new invite link for the account (revokes its earlier ones)")
    inv.add_argument("name")
    for action in (add, inv):
        action.add_argument("--days", type=float, default=7, help="how long the link stays valid (default 7)")
        action.add_argument("--url", help="the dashboard's address (default $COMPRESSLENS_PUBLIC_URL or "
                                          "http://localhost:8501)")
    actions.add_parser("list", help="every account with its latest invite")
    for action, text in (("revoke", "revoke the account's invite links"), ("disable", "end the account's access"),
                         ("enable", "give a disabled account its access back")):
        actions.add_parser(action, help=text).add_argument("name")
    pwd = actions.add_parser("password", help="set the account's password")
    pwd.add_argument("name")
    pwd.add_argument("--password-stdin", action="store_true")
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
    from core.pipeline.service import CompareRequest, ModelPool, compare

    gold = args.gold
    if gold is not None and "####" not in gold:
        gold = f"#### {gold}"
    request = CompareRequest(
        prompt=read_prompt(args), compressor=args.compressor, ratio=args.ratio,
        compressor_params=dict(parse_option(o) for o in args.compressor_option), model=args.model,
        preset=args.preset, sampler=dict(parse_option(o) for o in args.sampler_option) or None, seed=args.seed,
        task=args.task if gold is None or args.task != "custom" else "math", source="cli", gold_solution=gold,
        reference=args.reference, bertscore_backbone=args.bertscore_backbone,
        conditions=[c.strip() for c in args.conditions.split(",") if c.strip()], infill_length=args.infill_length,
        infill_k=args.infill_k,
    )

    def progress(fraction: float, message: str) -> None:
        if not args.json:
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr)

    view = compare(request, ModelPool(args.device), args.db or paths.db_url(), progress)
    if not args.trajectory:
        view.pop("trajectories")
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
    for other in view["other_conditions"]:
        print(f"{other['name']}:\n{other['output']}\n")
    for condition, tables in view["metrics"].items():
        for reference, values in tables.items():
            shown = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
            print(f"{condition} vs {reference}: {shown}")
    for condition, numbers in view["compute"].items():
        print(f"{condition}: {numbers['prompt_tokens']} prompt tokens, {numbers['forward_passes']} forward passes, "
              f"{numbers['tokens_processed'] or 'n/a'} token positions computed")
    for condition, trajectory in view.get("trajectories", {}).items():
        if trajectory:
            print(f"\ntrajectory on the {condition} prompt (token, commit step, probability):")
            print("  ".join(f"{piece!r}@{step}:{prob:.2f}" for piece, step, prob
                            in zip(trajectory["piece"], trajectory["step"], trajectory["prob"])))


def run_experiment(args) -> int:
    from core import paths
    from core.pipeline.experiments import Plan, experiment_summary
    from core.pipeline.service import ModelPool
    from core.pipeline.worker import Worker, job_state, submit_experiment

    try:
        with open(args.plan, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as exc:
        raise UserError(f"Cannot read {args.plan}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{args.plan} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{args.plan} must hold one JSON object")
    db_url = args.db or paths.db_url()
    # How it runs is not what it is: the same plan on another backend resumes the same experiment.
    raw.update({k: v for k, v in (("backend", args.backend), ("actors", args.actors)) if v is not None})
    experiment_id, job_id = submit_experiment(db_url, Plan.from_dict(raw))

    def progress(_fraction: float, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # The same job lifecycle as the dashboard's: a job row, run here by a worker of this process.
    worker = Worker(db_url, ModelPool(args.device), echo=progress)
    worker.requeue_interrupted()  # a killed earlier run of this plan gives its job back
    job = worker.claim(job_id)
    if job is None:
        raise UserError(f"Experiment #{experiment_id} is already running as job #{job_id} in another worker; "
                        "follow it on the Experiments page")
    worker.run_job(job)
    state = job_state(db_url, job_id)
    if state["status"] == "failed":
        raise UserError(state["error"])
    summary = experiment_summary(db_url, experiment_id)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(f"experiment {summary['experiment_id']} {summary['status']}: "
              f"{summary['outputs']}/{summary['total_units']} outputs")
    return 0


def run_export(args) -> int:
    import csv

    from core import paths
    from core.render import csv_cell
    from db.queries import output_rows
    from db.session import session_scope

    with session_scope(args.db or paths.db_url()) as session:
        rows = output_rows(session, args.experiment)
    if args.format == "jsonl":
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    columns = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(sys.stdout, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: csv_cell(json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in row.items()}
                     for row in rows)
    return 0


def run_worker(args) -> int:
    from core import paths
    from core.pipeline.service import ModelPool
    from core.pipeline.worker import Worker

    worker = Worker(args.db or paths.db_url(), ModelPool(args.device))
    print(f"worker serving {worker.db_url}; Ctrl-C stops it", file=sys.stderr)
    try:
        worker.serve()
    except KeyboardInterrupt:
        pass
    return 0


def read_password(from_stdin: bool) -> str:
    import getpass

    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != password:
        raise UserError("The two passwords differ")
    return password


def run_users(args) -> int:
    from core import accounts, paths

    db_url = args.db or paths.db_url()
    if args.action == "add":
        password = read_password(args.password_stdin) if args.role == "reviewer" or args.password_stdin else None
        accounts.create_account(db_url, args.name, args.role, password)
        print(f"{args.role} {args.name.strip()} added", file=sys.stderr)
    if args.action == "invite" or (args.action == "add" and args.invite):
        token = accounts.create_invite(db_url, args.name, args.days)
        print(accounts.invite_link(args.url or accounts.app_url(), token))
    elif args.action == "list":
        for account in accounts.list_accounts(db_url):
            latest = account["invites"][0] if account["invites"] else None
            invite = f"invite {latest['status']} until {latest['expires_at']}" if latest else "no invite"
            print(f"{account['name']}\t{account['role']}\t{'active' if account['active'] else 'disabled'}\t"
                  f"{'password' if account['password'] else 'no password'}\t{invite}")
    elif args.action == "revoke":
        print(f"revoked {accounts.revoke_invites(db_url, args.name)} invite link(s)", file=sys.stderr)
    elif args.action in ("disable", "enable"):
        accounts.set_active(db_url, args.name, args.action == "enable")
    elif args.action == "password":
        accounts.set_password(db_url, args.name, read_password(args.password_stdin))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"compare": run_compare, "experiment": run_experiment, "export": run_export,
                    "worker": run_worker, "users": run_users}
        return commands[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
