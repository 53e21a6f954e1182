"""Metrics with the field's own libraries: sacrebleu, rouge-score, bert-score; GSM8K exact match."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from core import paths
from core.errors import UserError

ROBERTA_LARGE = "roberta-large"
MINILM = "all-MiniLM-L6-v2 (offline)"

NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"


def normalize_number(text: str) -> str | None:
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else repr(value)


def gold_answer(solution: str) -> str | None:
    """The gold answer of a GSM8K solution: the text after ``####``, commas stripped."""
    if "####" not in solution:
        return None
    tail = solution.split("####")[-1].strip()
    return normalize_number(tail.split()[0]) if tail else None


def extract_answer(output: str) -> str | None:
    """A model's final answer: after ``####``, else after "The answer is", else the last number."""
    for marker in (r"####\s*", r"[Tt]he (?:final )?answer is[:\s]*"):
        found = re.findall(marker + r"\$?\s*(" + NUMBER + ")", output)
        if found:
            return normalize_number(found[-1])
    numbers = re.findall(NUMBER, output.replace("$", ""))
    return normalize_number(numbers[-1]) if numbers else None


def exact_match(prediction: str | None, gold: str | None) -> float | None:
    if gold is None:
        return None
    return float(prediction is not None and prediction == gold)


def bleu(candidate: str, reference: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(candidate, [reference]).score)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge(candidate: str, reference: str) -> dict[str, float]:
    scores = _rouge_scorer().score(reference, candidate)  # reference first
    return {name: float(s.fmeasure) for name, s in scores.items()}


@dataclass(frozen=True)
class BertScoreBackbone:
    label: str
    model_type: str
    num_layers: int | None


def bertscore_backbones() -> dict[str, BertScoreBackbone]:
    options = {ROBERTA_LARGE: BertScoreBackbone(ROBERTA_LARGE, "roberta-large", None)}
    minilm = paths.minilm_dir()
    if minilm is not None:
        options[MINILM] = BertScoreBackbone(MINILM, str(minilm), 6)
    return options


@lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """Whether the Hugging Face hub takes a connection (asked once a process, 3 s at most): a machine with no
    network need not set HF_HUB_OFFLINE, and the dashboard's default must still work there."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    try:
        socket.create_connection((urlparse(constants.ENDPOINT).hostname, 443), timeout=3).close()
    except OSError:
        return False
    return True


def roberta_large_available() -> bool:
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache("roberta-large", "config.json"), str):
        return True
    return not constants.HF_HUB_OFFLINE and hub_reachable()


def default_backbone() -> str:
    """roberta-large as bert-score uses for English, unless it cannot be had offline."""
    if roberta_large_available() or paths.minilm_dir() is None:
        return ROBERTA_LARGE
    return MINILM


@lru_cache(maxsize=2)
def _bertscorer(label: str, device: str):
    from bert_score import BERTScorer

    backbone = bertscore_backbones().get(label)
    if backbone is None:
        raise UserError(f"Unknown BERTScore backbone {label!r}; choose one of: {', '.join(bertscore_backbones())}")
    if label == ROBERTA_LARGE and not roberta_large_available():
        raise UserError("BERTScore backbone roberta-large is not downloaded and this machine is offline; "
                        f"choose {MINILM!r} or download roberta-large into the Hugging Face cache.")
    kwargs = {"model_type": backbone.model_type, "device": device}
    if backbone.num_layers is not None:
        kwargs["num_layers"] = backbone.num_layers
    try:
        return BERTScorer(**kwargs)
    except OSError as exc:
        raise UserError(f"Could not load BERTScore backbone {label}: {exc}") from None


def bertscore(candidate: str, reference: str, backbone: str, device: str = "cpu") -> dict[str, float]:
    if not candidate.strip() or not reference.strip():
        return {"bertscore_p": 0.0, "bertscore_r": 0.0, "bertscore_f1": 0.0}
    p, r, f = _bertscorer(backbone, device).score([candidate], [reference])
    return {"bertscore_p": float(p[0]), "bertscore_r": float(r[0]), "bertscore_f1": float(f[0])}


def text_metrics(candidate: str, reference: str, backbone: str, device: str = "cpu") -> dict[str, float]:
    return {"bleu": bleu(candidate, reference), **rouge(candidate, reference),
            **bertscore(candidate, reference, backbone, device)}


METRIC_LABELS = {
    "exact_match": "Exact match", "bleu": "BLEU", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L",
    "bertscore_p": "BERTScore P", "bertscore_r": "BERTScore R", "bertscore_f1": "BERTScore F1",
}
