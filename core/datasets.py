"""Prompt sources: the app's own samples, GSM8K, the CNN/DailyMail summarization sample, ShareGPT.

Datasets are read from the data directory (``COMPRESSLENS_DATA_DIR``: ``gsm8k/test.jsonl``,
``cnndm/test.jsonl``, ``sharegpt/prompts.jsonl``) or, for GSM8K and CNN/DailyMail, downloaded
from the Hugging Face hub when the machine is online.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from core import paths
from core.errors import UserError
from core.metrics import gold_answer

# Kept apart from the content, so that studies compress the content and never the instruction.
TASK_INSTRUCTIONS = {
    "math": "Solve the following problem step by step, then give the final answer on its own line as '#### N'.",
    "summarization": "Summarize the following news article in 3-4 sentences.",
    "chat": "",
    "custom": "",
}
BUILTIN_FILE = Path(__file__).parent / "data" / "samples.jsonl"


@dataclass
class Sample:
    source: str
    source_id: str
    task: str  # math | summarization | chat | custom
    prompt: str
    gold_solution: str | None = None  # GSM8K worked solution ending in "#### N"
    reference: str | None = None  # reference summary

    @property
    def gold_answer(self) -> str | None:
        return gold_answer(self.gold_solution) if self.gold_solution else None

    def to_dict(self) -> dict:
        return asdict(self)


def instructed(instruction: str, content: str) -> str:
    """The prompt a model sees: the task's instruction (if any), a blank line, the content."""
    return f"{instruction}\n\n{content}" if instruction else content


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def builtin_samples() -> list[Sample]:
    return [Sample("builtin", r["id"], r["task"], r["prompt"], r.get("answer"), r.get("reference"))
            for r in _read_jsonl(BUILTIN_FILE)]


def _local_or_download(relative: str, repo: str, filename: str) -> tuple[str, Path]:
    root = paths.data_dir()
    if root is not None and (root / relative).is_file():
        return "jsonl", root / relative
    from huggingface_hub import constants, hf_hub_download

    where = f"{root / relative}" if root else f"$COMPRESSLENS_DATA_DIR/{relative}"
    if constants.HF_HUB_OFFLINE:
        raise UserError(f"Dataset file {where} not found and this machine is offline; set COMPRESSLENS_DATA_DIR.")
    try:
        return "parquet", Path(hf_hub_download(repo, filename, repo_type="dataset"))
    except Exception as exc:
        raise UserError(f"Dataset file {where} not found and the download from {repo} failed: {exc}") from None


def gsm8k(split: str = "test") -> list[Sample]:
    kind, path = _local_or_download(f"gsm8k/{split}.jsonl", "openai/gsm8k", f"main/{split}-00000-of-00001.parquet")
    rows = _read_jsonl(path) if kind == "jsonl" else _read_parquet(path)
    return [Sample("gsm8k", f"{split}-{i}", "math", r["question"], r["answer"]) for i, r in enumerate(rows)]


def cnndm() -> list[Sample]:
    kind, path = _local_or_download("cnndm/test.jsonl", "abisee/cnn_dailymail", "3.0.0/test-00000-of-00003.parquet")
    rows = _read_jsonl(path) if kind == "jsonl" else _read_parquet(path)
    return [Sample("cnndm", str(r["id"]), "summarization", r["article"],
                   reference=r.get("reference") or r.get("highlights")) for r in rows]


def sharegpt() -> list[Sample]:
    root = paths.data_dir()
    path = root / "sharegpt" / "prompts.jsonl" if root else None
    if path is None or not path.is_file():
        raise UserError("ShareGPT prompts not found: set COMPRESSLENS_DATA_DIR to a folder with sharegpt/prompts.jsonl "
                        "(one {\"id\", \"prompt\"} object per line).")
    return [Sample("sharegpt", str(r["id"]), "chat", r["prompt"]) for r in _read_jsonl(path)]


def from_table(data: bytes, filename: str, text_column: str, *, task: str = "custom",
               id_column: str | None = None, gold_column: str | None = None,
               reference_column: str | None = None) -> list[Sample]:
    """Prompts from an uploaded JSONL or CSV file, the prompt text taken from ``text_column``."""
    import io

    import pandas as pd

    suffix = Path(filename).suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            frame = pd.read_json(io.BytesIO(data), lines=suffix == ".jsonl", dtype=False)
        elif suffix == ".csv":
            frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        else:
            raise UserError(f"{filename}: upload a .jsonl or .csv file")
    except ValueError as exc:
        raise UserError(f"{filename} could not be read as {suffix[1:].upper()}: {exc}") from None
    wanted = [c for c in (text_column, id_column, gold_column, reference_column) if c]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise UserError(f"{filename} has no column {', '.join(map(repr, missing))}; "
                        f"its columns are {', '.join(map(str, frame.columns))}")
    samples = []
    for i, row in enumerate(frame.to_dict("records")):
        text = str(row[text_column] if row[text_column] is not None else "").strip()
        if not text:
            continue
        gold = str(row[gold_column]).strip() if gold_column and row[gold_column] is not None else ""
        if gold and "####" not in gold:
            gold = f"#### {gold}"  # a bare answer reads as a GSM8K solution's last line
        samples.append(Sample(filename, str(row[id_column]) if id_column else str(i), task, text,
                              gold_solution=gold or None,
                              reference=str(row[reference_column]) if reference_column else None))
    if not samples:
        raise UserError(f"{filename}: column {text_column!r} holds no text")
    return samples


def _read_parquet(path: Path) -> list[dict]:
    import pandas as pd

    return pd.read_parquet(path).to_dict("records")


def generated_math() -> list[Sample]:
    """The demo model's held-out problems: generated like its training set, no instance shared."""
    from core import mathgen

    return [Sample("mathgen", f"heldout-{i}", "math", p.question, p.solution)
            for i, p in enumerate(mathgen.generate(500, "heldout", seed=0))]


SOURCES = {
    "mathgen": ("Generated math (the demo model's held-out problems)", generated_math),
    "builtin": ("Built-in samples", builtin_samples),
    "gsm8k": ("GSM8K (math)", gsm8k),
    "cnndm": ("CNN/DailyMail (summarization)", cnndm),
    "sharegpt": ("ShareGPT (chat)", sharegpt),
}


def load_source(name: str) -> list[Sample]:
    if name not in SOURCES:
        raise UserError(f"Unknown prompt source {name!r}; choose one of: {', '.join(SOURCES)}")
    return SOURCES[name][1]()


def sample_one(name: str, seed: int) -> Sample:
    samples = load_source(name)
    return samples[random.Random(seed).randrange(len(samples))]
