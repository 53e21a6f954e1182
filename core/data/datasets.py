"""Prompt sources: the app's own samples, GSM8K, the CNN/DailyMail summarization sample, ShareGPT,
DUC 2004 from the user's own copy, and the user's JSONL or CSV files.

Datasets are read from the data directory (``COMPRESSLENS_DATA_DIR``: ``gsm8k/test.jsonl``,
``cnndm/test.jsonl``, ``sharegpt/prompts.jsonl``) or, for GSM8K and CNN/DailyMail, downloaded
from the Hugging Face hub when the machine is online.

A source is a registered name (``SOURCES``) or a dict spec, so a plan can also name the user's data:

- ``{"kind": "duc2004", "path": FOLDER}``: see ``duc2004``;
- ``{"kind": "table", "path": FILE, "text_column": ..., "task": ..., "id_column": ..., "gold_column": ...,
  "reference_column": ...}``: a JSONL or CSV file read when the plan runs (see ``from_table``);
- ``{"kind": "inline", "name": FILE_NAME, "samples": [{"source_id", "task", "prompt", "gold_solution",
  "reference"}, ...]}``: the prompts themselves, so an uploaded file lives on in the database.
"""

from __future__ import annotations

import html
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, NamedTuple

from core import paths
from core.errors import UserError
from core.pipeline.metrics import gold_answer

# Kept apart from the content, so that studies compress the content and never the instruction.
TASK_INSTRUCTIONS = {
    "math": "Solve the following problem step by step, then give the final answer on its own line as '#### N'.",
    "summarization": "Summarize the following news article in 3-4 sentences.",
    "chat": "",
    "custom": "",
}
RECONSTRUCT_INSTRUCTION = ("The following text was compressed by deleting words. Rewrite it as the complete "
                           "original text, restoring the missing words. Reply with the restored text only.")
BUILTIN_FILE = Path(__file__).parent / "samples.jsonl"


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


def check_task(task: str) -> None:
    if task not in TASK_INSTRUCTIONS:
        raise UserError(f"Unknown task {task!r}; choose one of: {', '.join(TASK_INSTRUCTIONS)}")


def _read_table(data: bytes, filename: str):
    import io

    import pandas as pd

    suffix = Path(filename).suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            return pd.read_json(io.BytesIO(data), lines=suffix == ".jsonl", dtype=False)
        if suffix == ".csv":
            return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except ValueError as exc:
        raise UserError(f"{filename} could not be read as {suffix[1:].upper()}: {exc}") from None
    raise UserError(f"{filename}: upload a .jsonl or .csv file")


def _cell(row: dict, column: str | None) -> str | None:
    """A table cell as stripped text; empty, null and NaN cells (JSONL rows missing a key) are None."""
    value = row.get(column) if column else None
    if value is None or value != value:  # NaN is the one value unequal to itself
        return None
    return str(value).strip() or None


def table_columns(data: bytes, filename: str) -> list[str]:
    """The columns of a JSONL or CSV file, for the user to pick the prompt text column from."""
    return [str(c) for c in _read_table(data, filename).columns]


def from_table(data: bytes, filename: str, text_column: str, *, task: str = "custom",
               id_column: str | None = None, gold_column: str | None = None,
               reference_column: str | None = None) -> list[Sample]:
    """Prompts from an uploaded JSONL or CSV file, the prompt text taken from ``text_column``."""
    check_task(task)
    frame = _read_table(data, filename)
    wanted = [c for c in (text_column, id_column, gold_column, reference_column) if c]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise UserError(f"{filename} has no column {', '.join(map(repr, missing))}; "
                        f"its columns are {', '.join(map(str, frame.columns))}")
    samples = []
    for i, row in enumerate(frame.to_dict("records")):
        text = _cell(row, text_column)
        if not text:
            continue
        gold = _cell(row, gold_column)
        if gold and "####" not in gold:
            gold = f"#### {gold}"  # a bare answer reads as a GSM8K solution's last line
        samples.append(Sample(filename, _cell(row, id_column) or str(i), task, text, gold_solution=gold,
                              reference=_cell(row, reference_column)))
    if not samples:
        raise UserError(f"{filename}: column {text_column!r} holds no text")
    return samples


def _read_parquet(path: Path) -> list[dict]:
    import pandas as pd

    return pd.read_parquet(path).to_dict("records")


def generated_math() -> list[Sample]:
    """The demo model's held-out problems: generated like its training set, no instance shared."""
    from core.data import mathgen

    return [Sample("mathgen", f"heldout-{i}", "math", p.question, p.solution)
            for i, p in enumerate(mathgen.generate(500, "heldout", seed=0))]


def generated_word_problems() -> list[Sample]:
    """Word problems of the SmolLM2 diffusion model's held-out split: its generator's wordings, never trained on."""
    from core.data import wordproblems

    return [Sample("wordproblems", f"heldout-{i}", "math", p.question, p.solution)
            for i, p in enumerate(wordproblems.generate(500, "heldout", seed=0))]


DUC2004_LAYOUTS = ("NIST's layout (docs/<cluster>/<DOCNO> SGML files, human summaries under eval/models/) "
                   "or the flattened one (input.txt, one document per line, with task1_ref0.txt)")
_DOC = re.compile(r"<DOC>(.*?)</DOC>", re.S | re.I)
_DOCNO = re.compile(r"<DOCNO>(.*?)</DOCNO>", re.S | re.I)
_TEXT = re.compile(r"<TEXT>(.*?)</TEXT>", re.S | re.I)
_TAG = re.compile(r"<[^>]*>")


def _clean(text: str) -> str:
    """Markup (NYT paragraphs are <P>) and entities out, whitespace runs to one space."""
    return " ".join(html.unescape(_TAG.sub(" ", text)).split())


def duc2004(path: str | Path) -> list[Sample]:
    """DUC 2004 documents, one prompt each, from the user's own copy (NIST does not allow redistribution).

    Two layouts are read from the folder ``path``:

    - NIST's: documents under ``docs/<cluster>/`` (e.g. ``docs/d30001t/APW19981016.0240``), SGML files
      whose ``<DOC>`` holds a ``<DOCNO>`` and a ``<TEXT>``; human summaries anywhere under
      ``eval/models/``: task 1's very short per-document ones, named cluster.P.10.T.assessor.DOCNO
      (``D30001.P.10.T.A.APW19981016.0240``), and task 2's per-cluster ones, cluster.M.100.T.assessor
      (``D30001.M.100.T.A``). Ids are DOCNOs.
    - The flattened headline set of Rush et al. (2015): ``input.txt`` with one document per line and
      ``task1_ref0.txt`` .. ``task1_ref3.txt`` aligned with it by line. Ids are line numbers from 0.

    The reference is one human summary, kept simple: the document's task 1 summary by the first
    assessor, else its cluster's first task 2 summary (``task1_ref0.txt`` in the flattened set).
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"DUC2004 folder {root} not found; expected {DUC2004_LAYOUTS}")
    samples = _duc2004_flat(root) if (root / "input.txt").is_file() else _duc2004_nist(root)
    if not samples:
        raise UserError(f"No DUC2004 documents in {root}; expected {DUC2004_LAYOUTS}")
    return samples


def _duc2004_flat(root: Path) -> list[Sample]:
    documents = (root / "input.txt").read_text(encoding="utf-8", errors="replace").splitlines()
    reference_file = root / "task1_ref0.txt"
    references = (reference_file.read_text(encoding="utf-8", errors="replace").splitlines()
                  if reference_file.is_file() else [])
    if references and len(references) != len(documents):
        raise UserError(f"{reference_file} has {len(references)} lines and {root / 'input.txt'} has {len(documents)}; "
                        "they must be aligned line by line")
    return [Sample("duc2004", str(i), "summarization", _clean(document),
                   reference=_clean(references[i]) if references else None)
            for i, document in enumerate(documents) if document.strip()]


def _duc2004_nist(root: Path) -> list[Sample]:
    by_document, by_cluster = _duc2004_summaries(root / "eval" / "models")
    samples = []
    for path in sorted(p for p in (root / "docs").rglob("*") if p.is_file()):
        cluster = re.match(r"[a-z]*\d*", path.parent.name, re.I).group().upper()  # d30001t -> D30001
        for document in _DOC.findall(path.read_text(encoding="utf-8", errors="replace")):
            docno, text = _DOCNO.search(document), _TEXT.search(document)
            prompt = _clean(text.group(1)) if text else ""
            if docno and prompt:
                docno = docno.group(1).strip()
                samples.append(Sample("duc2004", docno, "summarization", prompt,
                                      reference=by_document.get(docno) or by_cluster.get(cluster)))
    return samples


def _duc2004_summaries(models_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The first human summary (by file name, so by assessor) of each document and of each cluster."""
    by_document: dict[str, str] = {}
    by_cluster: dict[str, str] = {}
    for path in sorted(p for p in models_dir.rglob("*") if p.is_file()):
        parts = path.name.split(".")
        text = _clean(path.read_text(encoding="utf-8", errors="replace"))
        if len(parts) > 5 and parts[1].upper() == "P":
            by_document.setdefault(".".join(parts[5:]), text)
        elif len(parts) == 5 and parts[1].upper() == "M":
            by_cluster.setdefault(parts[0].upper(), text)
    return by_document, by_cluster


def table_file(path: str | Path, text_column: str, **columns) -> list[Sample]:
    """``from_table`` on a file the plan names by its path (the command line's way to use own data)."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"Cannot read prompt file {path}: {exc.strerror}") from None
    return from_table(data, path.name, text_column, **columns)


def inline_source(name: str, samples: list[Sample]) -> dict:
    """A source spec that carries its prompts, so an experiment on an uploaded file needs the file no more."""
    return {"kind": "inline", "name": name,
            "samples": [{k: v for k, v in s.to_dict().items() if k != "source"} for s in samples]}


def _inline_samples(spec: dict) -> list[Sample]:
    name = spec["name"]
    if not isinstance(spec["samples"], list) or not spec["samples"]:
        raise UserError(f"Inline source {name!r} holds no samples")
    samples = []
    for i, row in enumerate(spec["samples"]):
        try:
            sample = Sample(name, **row)
        except TypeError:
            raise UserError(f"Inline source {name!r}, sample {i}: a sample has source_id, task, prompt and "
                            f"optionally gold_solution and reference; got {', '.join(map(str, row))}") from None
        check_task(sample.task)
        if not str(sample.prompt).strip():
            raise UserError(f"Inline source {name!r}, sample {i} ({sample.source_id}): the prompt is empty")
        samples.append(sample)
    return samples


class Source(NamedTuple):
    label: str
    load: Callable[[], list[Sample]]
    tasks: tuple[str, ...]


SOURCES = {
    "mathgen": Source("Generated math (the demo model's held-out problems)", generated_math, ("math",)),
    "wordproblems": Source("Generated word problems (held out from the SmolLM2 diffusion model's training)",
                           generated_word_problems, ("math",)),
    "builtin": Source("Built-in samples", builtin_samples, ("math", "summarization", "chat")),
    "gsm8k": Source("GSM8K (math)", gsm8k, ("math",)),
    "cnndm": Source("CNN/DailyMail (summarization)", cnndm, ("summarization",)),
    "sharegpt": Source("ShareGPT (chat)", sharegpt, ("chat",)),
}
# Spec kinds: the keys each needs, and those it may have besides.
SPEC_KEYS = {
    "duc2004": (("path",), ()),
    "table": (("path", "text_column"), ("task", "id_column", "gold_column", "reference_column")),
    "inline": (("name", "samples"), ()),
}


def check_source(source: str | dict) -> None:
    """Raises UserError unless ``source`` is a registered name or a usable spec (paths exist, keys known)."""
    if isinstance(source, str):
        if source not in SOURCES:
            raise UserError(f"Unknown prompt source {source!r}; choose one of: {', '.join(SOURCES)}")
        return
    kind = source.get("kind") if isinstance(source, dict) else None
    if kind not in SPEC_KEYS:
        got = f"kind {kind!r}" if isinstance(source, dict) else repr(source)
        raise UserError(f"A prompt source is a name ({', '.join(SOURCES)}) or a dict whose kind is "
                        f"{', '.join(SPEC_KEYS)}; got {got}")
    required, optional = SPEC_KEYS[kind]
    missing = [key for key in required if not source.get(key)]
    unknown = sorted(set(source) - {"kind", *required, *optional})
    if missing or unknown:
        problem = f"missing {', '.join(missing)}" if missing else f"unknown key(s) {', '.join(unknown)}"
        raise UserError(f"A {kind} source needs {', '.join(required)} and may have "
                        f"{', '.join(optional) or 'nothing else'}; {problem}")
    if kind == "inline":
        _inline_samples(source)
    elif kind == "duc2004" and not Path(source["path"]).expanduser().is_dir():
        raise UserError(f"DUC2004 folder {source['path']} not found; expected {DUC2004_LAYOUTS}")
    elif kind == "table":
        if not Path(source["path"]).expanduser().is_file():
            raise UserError(f"Prompt file {source['path']} not found")
        check_task(source.get("task") or "custom")


def load_source(source: str | dict) -> list[Sample]:
    check_source(source)
    if isinstance(source, str):
        return SOURCES[source].load()
    if source["kind"] == "duc2004":
        return duc2004(source["path"])
    if source["kind"] == "table":
        columns = {k: source.get(k) for k in ("id_column", "gold_column", "reference_column")}
        return table_file(source["path"], source["text_column"], task=source.get("task") or "custom", **columns)
    return _inline_samples(source)


def source_name(source: str | dict) -> str:
    """A short stable name for a source: the prefix of its prompts' ids in an experiment."""
    if isinstance(source, str):
        return source
    if source["kind"] == "duc2004":
        return "duc2004"
    return Path(source.get("name") or source["path"]).name


def sample_one(name: str, seed: int) -> Sample:
    samples = load_source(name)
    return samples[random.Random(seed).randrange(len(samples))]
