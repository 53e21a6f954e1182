"""Prompt compressors behind one registry.

Each returns the compressed text, the compressor's own per-word keep/drop labels over the
original (with character spans, so pages mark dropped words from the labels, not from a text
diff), and token counts measured with the target model's tokenizer. "Ratio r" means the
compressed prompt should hold about original tokens / r tokens of the target model.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from core import paths
from core.errors import UserError

CountTokens = Callable[[str], int]

MIN_RATIO, MAX_RATIO = 1.0, 20.0


@dataclass
class Word:
    text: str
    start: int | None  # character span in the original; None where the compressor's word is not found verbatim
    end: int | None
    kept: bool


@dataclass
class Compression:
    compressor: str
    params: dict
    ratio_requested: float
    original: str
    compressed: str
    words: list[Word]
    original_tokens: int
    compressed_tokens: int
    original_tokens_cl100k: int | None = None
    compressed_tokens_cl100k: int | None = None
    seconds: float = 0.0
    forward_passes: int | None = None  # of a model that scored the words, for the compressors that ask one

    @property
    def achieved_ratio(self) -> float:
        return self.original_tokens / max(self.compressed_tokens, 1)

    @property
    def kept_words(self) -> list[bool]:
        return [w.kept for w in self.words]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["achieved_ratio"] = self.achieved_ratio
        return out


def check_ratio(ratio: float) -> float:
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        raise UserError(f"Compression ratio must be a number, got {ratio!r}") from None
    if not MIN_RATIO < ratio <= MAX_RATIO:
        raise UserError(f"Compression ratio must be in ({MIN_RATIO:g}, {MAX_RATIO:g}], got {ratio:g}")
    return ratio


def whitespace_words(text: str) -> list[Word]:
    return [Word(m.group(), m.start(), m.end(), True) for m in re.finditer(r"\S+", text)]


def fit_to_budget(words: list[Word], drop_order: list[int], count_tokens: CountTokens, original_tokens: int,
                  ratio: float) -> str:
    """Drop words in ``drop_order`` until original_tokens / tokens of the joined text is nearest ``ratio``.

    Token counts fall (almost) monotonically with each word dropped, so a binary search finds
    the fewest drops that reach the budget; one drop fewer is taken when its ratio is nearer.
    """
    def text_after(k: int) -> str:
        dropped = set(drop_order[:k])
        return " ".join(w.text for i, w in enumerate(words) if i not in dropped)

    def ratio_error(k: int) -> float:
        return abs(original_tokens / max(count_tokens(text_after(k)), 1) - ratio)

    budget = original_tokens / ratio
    lo, hi = 0, len(drop_order)
    while lo < hi:
        mid = (lo + hi) // 2
        if count_tokens(text_after(mid)) <= budget:
            hi = mid
        else:
            lo = mid + 1
    best = lo - 1 if lo > 0 and ratio_error(lo - 1) < ratio_error(lo) else lo
    for i in drop_order[:best]:
        words[i].kept = False
    return text_after(best)


class WordBudget:
    """Compressors that drop whole whitespace words, in an order of their own, down to the budget."""

    name = ""
    forward_passes: int | None = None  # set by the compressors that ask a model, as they choose the order

    def params(self) -> dict:
        return {}

    def drop_order(self, words: list[Word]) -> list[int]:
        raise NotImplementedError

    def compress(self, text: str, ratio: float, count_tokens: CountTokens) -> Compression:
        ratio = check_ratio(ratio)
        started = time.perf_counter()
        words = whitespace_words(text)
        original_tokens = count_tokens(text)
        compressed = fit_to_budget(words, self.drop_order(words), count_tokens, original_tokens, ratio)
        return Compression(
            compressor=self.name, params=self.params(), ratio_requested=ratio, original=text,
            compressed=compressed, words=words, original_tokens=original_tokens,
            compressed_tokens=count_tokens(compressed), seconds=time.perf_counter() - started,
            forward_passes=self.forward_passes,
        )


class RandomDrop(WordBudget):
    """Baseline: drop words chosen uniformly at random (seeded)."""

    name = "random"
    label = "Random word drop (seeded)"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def params(self) -> dict:
        return {"seed": self.seed}

    def drop_order(self, words: list[Word]) -> list[int]:
        order = list(range(len(words)))
        random.Random(self.seed).shuffle(order)
        return order


class Truncate(WordBudget):
    """Baseline: keep the beginning of the prompt, drop its tail."""

    name = "truncate"
    label = "Truncation (keep the beginning)"

    def drop_order(self, words: list[Word]) -> list[int]:
        return list(range(len(words) - 1, -1, -1))


LLMLINGUA2_DEFAULT = "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
LLMLINGUA2_SMALL = "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank"
# llmlingua picks its word-merging rules from these substrings of the model path.
LLMLINGUA2_FAMILIES = {"xlm-roberta": "xlm-roberta-large", "bert": "bert-base-multilingual-cased"}


class LLMLingua2:
    """LLMLingua-2 through the ``llmlingua`` package (token classification, keep probability per word).

    The package's ``rate`` counts GPT tokens and is approximate; with ``calibrate`` on, a few
    bisection rounds on ``rate`` bring the ratio in the target model's tokens near the ask.
    """

    name = "llmlingua2"
    label = "LLMLingua-2"
    calibration_rounds = 6
    calibration_tolerance = 0.05

    def __init__(self, model: str = LLMLINGUA2_DEFAULT, device: str | None = None,
                 force_tokens: tuple[str, ...] = ("\n",), force_reserve_digit: bool = False, calibrate: bool = True):
        self.model = model
        self.device = device
        self.force_tokens = list(force_tokens)
        self.force_reserve_digit = bool(force_reserve_digit)
        self.calibrate = bool(calibrate)
        self._compressor = None

    def params(self) -> dict:
        return {"model": self.model, "force_tokens": self.force_tokens,
                "force_reserve_digit": self.force_reserve_digit, "drop_consecutive": True, "calibrate": self.calibrate}

    def load(self):
        if self._compressor is None:
            import torch
            from llmlingua import PromptCompressor

            paths.ensure_cl100k()
            model_dir = llmlingua2_model_dir(self.model)
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._compressor = PromptCompressor(model_name=str(model_dir), use_llmlingua2=True, device_map=device,
                                                model_config={"trust_remote_code": False})
        return self._compressor

    def _run(self, text: str, rate: float) -> tuple[str, list[tuple[str, bool]]]:
        result = self.load().compress_prompt(
            [text], rate=rate, force_tokens=self.force_tokens, force_reserve_digit=self.force_reserve_digit,
            drop_consecutive=True, return_word_label=True, word_sep="\t\t|\t\t", label_sep=" ",
        )
        labelled = []
        for item in result["fn_labeled_original_prompt"].split("\t\t|\t\t"):
            word, _, label = item.rpartition(" ")
            labelled.append((word, label == "1"))
        return result["compressed_prompt"], labelled

    def compress(self, text: str, ratio: float, count_tokens: CountTokens) -> Compression:
        ratio = check_ratio(ratio)
        started = time.perf_counter()
        original_tokens = count_tokens(text)
        rate = 1.0 / ratio
        lo, hi = 0.0, 1.0
        best = None
        rounds = self.calibration_rounds if self.calibrate else 1
        for _ in range(rounds):
            compressed, labelled = self._run(text, rate)
            achieved = original_tokens / max(count_tokens(compressed), 1)
            error = abs(achieved - ratio) / ratio
            if best is None or error < best[0]:
                best = (error, rate, compressed, labelled)
            if error <= self.calibration_tolerance:
                break
            # Too little compression: ask for a smaller rate; too much: a larger one.
            if achieved < ratio:
                hi = rate
            else:
                lo = rate
            rate = (lo + hi) / 2
        _, rate, compressed, labelled = best
        oai = self.load().oai_tokenizer
        return Compression(
            compressor=self.name, params={**self.params(), "rate": rate}, ratio_requested=ratio, original=text,
            compressed=compressed, words=align_words(text, labelled), original_tokens=original_tokens,
            compressed_tokens=count_tokens(compressed), original_tokens_cl100k=len(oai.encode(text)),
            compressed_tokens_cl100k=len(oai.encode(compressed)), seconds=time.perf_counter() - started,
        )


def align_words(text: str, labelled: list[tuple[str, bool]]) -> list[Word]:
    """Character spans for the compressor's words, found in order in the original text."""
    lowered = text.lower()
    words, cursor = [], 0
    for word, kept in labelled:
        needle = word.strip()
        # Case-insensitive, since uncased tokenizers lowercase words; the earliest match wins.
        start = lowered.find(needle.lower(), cursor) if needle else -1
        if start < 0:
            words.append(Word(word, None, None, kept))
            continue
        words.append(Word(word, start, start + len(needle), kept))
        cursor = start + len(needle)
    return words


def llmlingua2_model_dir(name_or_path: str) -> Path:
    """A local token-classification checkpoint whose path tells llmlingua its word-merging rules."""
    import json

    from core.llada.loader import resolve_model_dir

    try:
        model_dir = resolve_model_dir(name_or_path)
    except UserError as exc:
        raise UserError(f"LLMLingua-2 checkpoint unavailable. {exc}") from None
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{model_dir} has no readable config.json: not an LLMLingua-2 checkpoint ({exc})") from None
    if not any("ForTokenClassification" in a for a in config.get("architectures") or []):
        raise UserError(f"{model_dir} is not a ...ForTokenClassification checkpoint, which LLMLingua-2 needs")
    family = LLMLINGUA2_FAMILIES.get(config.get("model_type", "").replace("_", "-"))
    if family is None:
        raise UserError(f"LLMLingua-2 supports XLM-RoBERTa and BERT checkpoints, not model_type {config.get('model_type')!r}")
    if family in str(model_dir):
        return model_dir
    digest = hashlib.sha1(str(model_dir.resolve()).encode()).hexdigest()[:12]
    link = paths.cache_dir() / "llmlingua2-links" / f"{digest}-{family}"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(model_dir.resolve(), target_is_directory=True)
    return link


class ModelScored(WordBudget):
    """Compressors that ask a model how much each word matters; ``scorer`` (a generator) is attached by
    the model pool: the run's own model (``scorer_model = "target"``) or a named one."""

    scorer_model = "target"
    label = ""

    def __init__(self, force_reserve_digit: bool = False, model: str | None = None):
        self.force_reserve_digit = bool(force_reserve_digit)
        self.model = model
        self.scorer = None
        self.forward_passes = 0

    def params(self) -> dict:
        return {"force_reserve_digit": self.force_reserve_digit, "model": self.model}

    def word_scores(self, words: list[str]) -> list[float]:
        """Higher: the word is dropped sooner."""
        raise NotImplementedError

    def drop_order(self, words: list[Word]) -> list[int]:
        if self.scorer is None:
            raise UserError(f"The {self.name} compressor needs a model: run it from the Playground, a plan or the CLI")
        scores = self.word_scores([w.text for w in words])
        # As LLMLingua-2's force_reserve_digit: a word with a digit is never dropped.
        droppable = [i for i, w in enumerate(words) if not (self.force_reserve_digit and re.search(r"\d", w.text))]
        return sorted(droppable, key=lambda i: -scores[i])


class DLLMConfidence(ModelScored):
    """Training-free, parallel: the target diffusion model sees the prompt with a spread-out share of its
    words masked, in ``copies`` masked copies so every word is masked once; the words it restores most
    surely are dropped first."""

    name = "dllm_confidence"
    label = "dLLM confidence (the target model restores the words it drops)"

    def __init__(self, copies: int = 8, force_reserve_digit: bool = False, model: str | None = None):
        super().__init__(force_reserve_digit, model)
        self.copies = int(copies)
        if not 1 <= self.copies <= 64:
            raise UserError(f"copies must be from 1 to 64, not {copies}")

    def params(self) -> dict:
        return {**super().params(), "copies": self.copies}

    def word_scores(self, words: list[str]) -> list[float]:
        if not hasattr(self.scorer, "recoverability"):
            raise UserError(f"dllm_confidence asks a diffusion model; {self.scorer.info.model_id} is autoregressive")
        scores, self.forward_passes = self.scorer.recoverability(words, self.copies)
        return scores


class SelfInformation(ModelScored):
    """Selective Context's idea on the autoregressive control: the words least surprising given the text
    before them carry the least information and are dropped first."""

    name = "self_information"
    label = "Self-information (the AR control's surprisal)"
    scorer_model = "control"

    def word_scores(self, words: list[str]) -> list[float]:
        if not hasattr(self.scorer, "surprisal"):
            raise UserError(f"self_information asks an autoregressive model; {self.scorer.info.model_id} is not one")
        surprisal, self.forward_passes = self.scorer.surprisal(words)
        return [-value for value in surprisal]


REGISTRY: dict[str, type] = {cls.name: cls for cls in (LLMLingua2, RandomDrop, Truncate, DLLMConfidence,
                                                       SelfInformation)}


def get_compressor(name: str, **params):
    if name not in REGISTRY:
        raise UserError(f"Unknown compressor {name!r}; choose one of: {', '.join(REGISTRY)}")
    try:
        return REGISTRY[name](**params)
    except TypeError as exc:
        raise UserError(f"Bad parameters for compressor {name!r}: {exc}") from None
