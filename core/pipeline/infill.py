"""Reconstruction by infill: what only a masked diffusion model can do with a compressed prompt.

The compressed prompt keeps its words where they stood; each run of dropped words becomes a run
of mask tokens, and the model fills them (bidirectionally, with no instruction), as its sampler
fills an answer. How many masks a gap gets is the length rule: ``oracle`` gives the dropped
words' own token count, ``fixed`` gives ``k`` per gap (fills that decode to an end token are
dropped, so a gap may come back shorter).

``restored`` scores any reconstruction, by infill or by instruction, the same way: the share of
the dropped words (and of the dropped numbers) that it brings back beyond what the compressed
prompt already held.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from core.errors import UserError

LENGTH_RULES = ("oracle", "fixed")
DEFAULT_K = 2
MASK_SHOWN = "[MASK]"  # how a canvas's mask tokens are written in a stored prompt

_WORD = re.compile(r"[\w$%.,'-]+")
_NUMBER = re.compile(r"\d")


@dataclass(frozen=True)
class Segment:
    """A run of the original's words: kept (its text goes into the canvas) or dropped (a gap)."""

    text: str
    kept: bool


def segments(words) -> list[Segment]:
    """Consecutive kept and dropped words of a compression (``Word`` objects or their dicts) joined into runs."""
    runs: list[Segment] = []
    for word in words:
        text, kept = (word["text"], word["kept"]) if isinstance(word, dict) else (word.text, word.kept)
        if runs and runs[-1].kept == kept:
            runs[-1] = Segment(f"{runs[-1].text} {text}", kept)
        else:
            runs.append(Segment(text, kept))
    return runs


def check_rule(rule: str, k: int) -> None:
    if rule not in LENGTH_RULES:
        raise UserError(f"Infill length rule must be one of {', '.join(LENGTH_RULES)}, not {rule!r}")
    if rule == "fixed" and not 1 <= int(k) <= 64:
        raise UserError(f"Infill masks per gap must be from 1 to 64, not {k}")


def mask_counts(runs: list[Segment], rule: str, k: int, count_tokens) -> list[int]:
    """Masks for each gap (dropped run), in order: its own token count under ``oracle``, else ``k``."""
    check_rule(rule, k)
    # A dropped run stands after a space in the original, so its tokens are counted as they are there.
    return [max(count_tokens(" " + s.text), 1) if rule == "oracle" else int(k) for s in runs if not s.kept]


def shown(runs: list[Segment], counts: list[int]) -> str:
    """The canvas as text, for the stored prompt of the ``infilled`` condition."""
    gaps = iter(counts)
    return " ".join(s.text if s.kept else MASK_SHOWN * next(gaps) for s in runs)


def _words(text: str) -> list[str]:
    return [w.strip(".,'-").lower() for w in _WORD.findall(text) if w.strip(".,'-")]


def marked(words, reconstruction: str) -> list[tuple[str, str]]:
    """``reconstruction`` in pieces (text, mark): "restored" for a word that brings back a dropped one,
    "new" for a word the original prompt does not hold, "" otherwise; kept words claim theirs first,
    as in ``restored``."""
    runs = segments(words)
    kept = Counter(_words(" ".join(s.text for s in runs if s.kept)))
    dropped = Counter(_words(" ".join(s.text for s in runs if not s.kept)))
    pieces = []
    for piece in re.split(r"(\s+)", reconstruction):
        found = _words(piece)
        word = found[0] if len(found) == 1 else None
        mark = ""
        if word is not None and kept[word] > 0:
            kept[word] -= 1
        elif word is not None and dropped[word] > 0:
            dropped[word] -= 1
            mark = "restored"
        elif word is not None and word not in kept and word not in dropped:
            mark = "new"
        pieces.append((piece, mark))
    return pieces


def restored(words, reconstruction: str) -> dict[str, float]:
    """Shares of the dropped words and of the dropped numbers that ``reconstruction`` brings back: each
    of its words counts once, after the kept words have claimed theirs. No number dropped: no number share."""
    runs = segments(words)
    available = Counter(_words(reconstruction)) - Counter(_words(" ".join(s.text for s in runs if s.kept)))
    dropped = _words(" ".join(s.text for s in runs if not s.kept))
    back = []
    for word in dropped:
        back.append(available[word] > 0)
        available[word] -= 1
    scores = {"dropped_words_restored": sum(back) / len(back) if back else 1.0}
    numbers = [hit for word, hit in zip(dropped, back) if _NUMBER.search(word)]
    if numbers:
        scores["dropped_numbers_restored"] = sum(numbers) / len(numbers)
    return scores
