"""The conditions a prompt is run under, in the order they run, and what each one gives the model.

- ``original``: the prompt as it is (with the task's instruction);
- ``compressed``: the compressed prompt;
- ``reconstructed``: the model asked to restore the original from the compressed prompt;
- ``reasoning_on_reconstructed``: the task on that reconstruction;
- ``infilled``: the compressed prompt with masks where words were dropped, filled by the model
  (``core.pipeline.infill``; diffusion models only);
- ``reasoning_on_infilled``: the task on the filled prompt.

A Playground comparison and an experiment build them here, so both give the model the same input.
"""

from __future__ import annotations

from core.data import datasets
from core.errors import UserError
from core.pipeline import infill

CONDITIONS = ("original", "compressed", "reconstructed", "reasoning_on_reconstructed", "infilled",
              "reasoning_on_infilled")
# The published study's four, and what a plan runs unless it asks for others.
STUDY_CONDITIONS = CONDITIONS[:4]
# Each condition that answers a rebuilt prompt, and the reconstruction it answers.
REASONING_ON = {"reasoning_on_reconstructed": "reconstructed", "reasoning_on_infilled": "infilled"}
# Conditions whose output is a rebuilt prompt, scored against the original prompt.
RECONSTRUCTIONS = ("reconstructed", "infilled")


def check(conditions) -> None:
    bad = [c for c in conditions if c not in CONDITIONS]
    if bad or not conditions:
        raise UserError(f"Conditions must be among {', '.join(CONDITIONS)}; got {', '.join(bad) or 'none'}")
    for reasoning, rebuilt in REASONING_ON.items():
        if reasoning in conditions and rebuilt not in conditions:
            raise UserError(f"{reasoning} needs the {rebuilt} condition too")


def canvas(cut, rule: str, k: int, count_tokens) -> tuple[list[infill.Segment], list[int]]:
    """The infill canvas of a compression: its runs of kept and dropped words, and masks per gap."""
    runs = infill.segments(cut.words)
    return runs, infill.mask_counts(runs, rule, k, count_tokens)


def prompt_for(condition: str, *, instruction: str, prompt: str, cut, rebuilt: dict[str, str],
               infill_canvas: tuple | None = None) -> str:
    """What the model is given under ``condition``; ``rebuilt`` holds the reconstructions made so far."""
    if condition == "original":
        return datasets.instructed(instruction, prompt)
    if condition == "compressed":
        return datasets.instructed(instruction, cut.compressed)
    if condition == "reconstructed":
        return f"{datasets.RECONSTRUCT_INSTRUCTION}\n\n{cut.compressed}"
    if condition == "infilled":
        return infill.shown(*infill_canvas)
    return datasets.instructed(instruction, rebuilt[REASONING_ON[condition]])


def generate(generator, condition: str, prompts: list[str], canvases: list, params, seed: int) -> list:
    """The outputs of one condition for a batch: an infill for ``infilled``, else a generation."""
    if condition != "infilled":
        return generator.generate(prompts, params, seed)
    if not hasattr(generator, "infill"):
        raise UserError(f"{generator.info.model_id} is autoregressive: the infilled conditions need a diffusion model")
    return generator.infill(canvases, params, seed)
