"""Generators: one small interface that LLaDA (and later autoregressive controls) satisfy."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch

from core.errors import UserError
from core.llada import block_diffusion, dream, fast, loader, sampler
from core.llada.tokenizer import chat_prompt

StepCallback = Callable[[int, int], None]


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    seconds: float  # of the batch it ran in
    forward_calls: int
    # Per token id: the step that committed it (0: filled without a pass, as after an early stop) and
    # the model's probability of it then.
    commit_steps: list[int] = field(default_factory=list)
    commit_probs: list[float] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)  # each token id decoded alone, for token-level views
    tokens_processed: int = 0  # this prompt's real token positions, summed over the forward passes
    peak_memory_bytes: int | None = None  # of the batch on the GPU; None on a CPU

    def trajectory(self) -> dict:
        return {"step": self.commit_steps, "prob": [round(p, 4) for p in self.commit_probs], "piece": self.pieces}


@dataclass
class ModelInfo:
    model_id: str
    local_path: str
    kind: str  # the diffusion family (llada, illada, dream; core.llada.families), or "ar" for the control
    device: str
    dtype: str
    parameters: int
    max_length: int
    revision: str | None = None
    notes: list[str] = field(default_factory=list)


class Generator(Protocol):
    info: ModelInfo

    def count_tokens(self, text: str) -> int: ...

    def prompt_length(self, prompt: str) -> int: ...

    def generate(self, prompts: list[str], params: sampler.SamplerParams, seed: int,
                 on_step: StepCallback | None = None) -> list[Generation]: ...


def check_lengths(prompt_lengths: list[int], gen_length: int, max_length: int) -> None:
    """Refuse prompts that with the answer would not fit the model's context."""
    for length in prompt_lengths:
        if length + gen_length > max_length:
            raise UserError(f"Prompt of {length} tokens plus {gen_length} generated tokens exceeds the model's "
                            f"context of {max_length} tokens; shorten the prompt or gen_length.")


def left_pad(encoded: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask) of token lists left-padded to one width; the mask marks real tokens with 1."""
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, tokens in enumerate(encoded):
        ids[row, width - len(tokens):] = torch.tensor(tokens)
        mask[row, width - len(tokens):] = 1
    return ids, mask


def halving_on_oom(items: list, run: Callable[[list], list], size: int, note: Callable[[str], None]) -> tuple[list, int]:
    """``run`` over ``items`` in chunks of ``size``; on GPU out-of-memory the chunk size halves and
    the failed chunk runs again, so a study goes on. Returns the results and the size that worked."""
    results: list = []
    done = 0
    while done < len(items):
        chunk = items[done:done + size]
        try:
            results += run(chunk)
        except torch.OutOfMemoryError:
            if size == 1:
                raise
            size //= 2
            torch.cuda.empty_cache()
            note(f"GPU out of memory at batch {len(chunk)}: going on at batch {size}")
            continue
        done += len(chunk)
    return results, size


def run_sampler(model, prompt: torch.Tensor, attention_mask: torch.Tensor | None, params: sampler.SamplerParams, *,
                mask_id: int, eos_id: int, eot_id: int, rng: torch.Generator | None = None,
                on_step: Callable[[int, int, torch.Tensor], None] | None = None
                ) -> tuple[torch.Tensor, sampler.Trace]:
    """The canvas and its trace (trajectory, forward passes, positions computed), from the loop
    ``params.mode`` names."""
    B, P = prompt.shape
    real = torch.ones(B, P + params.gen_length, dtype=torch.long, device=prompt.device)
    if attention_mask is not None:
        real[:, :P] = attention_mask
    trace = sampler.Trace(real, params.gen_length)
    common = dict(steps=params.steps, gen_length=params.gen_length, block_length=params.block_length,
                  temperature=params.temperature, remasking=params.remasking, mask_id=mask_id, eos_id=eos_id,
                  eot_id=eot_id, logits_eos_inf=params.logits_eos_inf,
                  confidence_eos_eot_inf=params.confidence_eos_eot_inf, rng=rng, on_step=on_step, trace=trace)
    if params.mode == "dream":
        canvas = dream.generate(model, prompt, attention_mask, steps=params.steps, gen_length=params.gen_length,
                                eps=params.eps, alg=params.alg, alg_temp=params.alg_temp,
                                temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                                mask_id=mask_id, rng=rng, on_step=on_step, trace=trace)
        return canvas, trace
    if params.mode == "block":
        canvas = block_diffusion.generate(
            model, prompt, attention_mask, gen_length=params.gen_length, block_length=params.block_length,
            steps=params.steps, threshold=params.threshold, temperature=params.temperature, top_p=params.top_p,
            top_k=params.top_k, editing_threshold=params.editing_threshold, max_post_steps=params.max_post_steps,
            eos_early_stop=params.early_stop, cache=params.cache == "block", mask_id=mask_id, eos_id=eos_id, rng=rng,
            on_step=on_step, trace=trace)
        return canvas, trace
    if params.mode == "fast":
        result = fast.generate(model, prompt, attention_mask, cache=params.cache, threshold=params.threshold,
                               early_stop=params.early_stop, window=None if params.window < 0 else params.window,
                               entropy_threshold=params.entropy_threshold, **common)
        return result.canvas, trace
    return sampler.generate(model, prompt, attention_mask, cfg_scale=params.cfg_scale, **common), trace


def spaced_tokens(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's token ids as it stands in the texts joined by spaces: after a space, but for the first."""
    return [tokenizer((" " if i else "") + text, add_special_tokens=False).input_ids for i, text in enumerate(texts)]


def hub_revision(model_dir: Path) -> str | None:
    """The commit hash when the directory is a hub cache snapshot (…/snapshots/<hash>)."""
    return model_dir.name if model_dir.parent.name == "snapshots" else None


class LLaDAGenerator:
    def __init__(self, model_id: str, device: str | None = None, dtype: torch.dtype | None = None):
        model_dir = loader.resolve_model_dir(model_id)
        self.device = torch.device(device) if device else loader.default_device()
        _, self.family = loader.read_family(model_dir)
        self.model = loader.load_llada(model_dir, self.device, dtype)
        self.tokenizer = loader.load_tokenizer(model_dir)
        cfg = self.model.cfg
        vocab = self.tokenizer.get_vocab()

        def token_id(role: str, from_config: int) -> int:
            """The family's token by name in this tokenizer, else the id its config gives."""
            return vocab.get(self.family.token_names.get(role), from_config)

        self.mask_id = token_id("mask", cfg.mask_token_id)
        self.eos_id = token_id("eos", cfg.eos_token_id)
        self.eot_id = token_id("eot", self.eos_id if cfg.eot_token_id is None else cfg.eot_token_id)
        self.info = ModelInfo(
            model_id=model_id, local_path=str(model_dir), kind=self.family.name, device=str(self.device),
            dtype=str(next(self.model.parameters()).dtype).removeprefix("torch."),
            parameters=self.model.num_parameters(), max_length=cfg.max_sequence_length,
            revision=hub_revision(model_dir),
        )
        self.max_batch: int | None = None  # lowered for good after a GPU out-of-memory
        self.notes: list[str] = []  # what the caller should tell the user (out-of-memory retries)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def encode_prompt(self, prompt: str) -> list[int]:
        # The template already holds BOS; the tokenizer must not add another.
        return self.tokenizer(chat_prompt(self.tokenizer, prompt), add_special_tokens=False).input_ids

    def prompt_length(self, prompt: str) -> int:
        return len(self.encode_prompt(prompt))

    def check_fits(self, prompts: list[str], params: sampler.SamplerParams) -> None:
        self.check_sampler(params)
        check_lengths([self.prompt_length(p) for p in prompts], params.canvas_room, self.info.max_length)

    def check_sampler(self, params: sampler.SamplerParams) -> None:
        """Each family decodes with the loops its papers use (Dream its own; LLaDA-MoE LLaDA's reference)."""
        if params.mode not in self.family.modes:
            raise UserError(f"{self.info.model_id} is a {self.family.title} model; it decodes with "
                            f"{self.family.decodes_with}")

    def generate(self, prompts: list[str], params: sampler.SamplerParams, seed: int,
                 on_step: StepCallback | None = None) -> list[Generation]:
        problems = params.problems()
        if problems:
            raise UserError("Sampler settings: " + "; ".join(problems))
        self.check_sampler(params)
        encoded = [self.encode_prompt(p) for p in prompts]
        check_lengths([len(ids) for ids in encoded], params.canvas_room, self.info.max_length)
        size = min(len(encoded), self.max_batch or len(encoded))
        results, self.max_batch = halving_on_oom(
            encoded, lambda chunk: self._generate(chunk, params, seed, on_step), size, self.notes.append)
        return results

    def word_tokens(self, words: list[str]) -> tuple[list[int], list[int]]:
        """The text of ``words`` joined by spaces as token ids (BOS first when the tokenizer has one), and
        for each id the index of its word (-1 for BOS): each word tokenized as it stands after a space."""
        bos = self.tokenizer.bos_token_id
        ids, owner = ([bos], [-1]) if bos is not None else ([], [])
        for i, tokens in enumerate(spaced_tokens(self.tokenizer, words)):
            ids += tokens
            owner += [i] * len(tokens)
        return ids, owner

    @torch.no_grad()
    def recoverability(self, words: list[str], copies: int, batch: int = 8) -> tuple[list[float], int]:
        """How surely the model restores each word when it is masked: the mean log-probability of the word's
        own tokens. Copy c of the text masks every word i with i % copies == c, so each word is masked once,
        among mostly visible neighbours; copies run ``batch`` at a time. Returns the scores and the forward
        passes they took."""
        ids, owner = self.word_tokens(words)
        check_lengths([len(ids)], 0, self.info.max_length)
        owner_t = torch.tensor(owner, device=self.device)
        truth = torch.tensor(ids, device=self.device)
        copy = torch.arange(copies, device=self.device)[:, None]
        masked = (owner_t[None, :] >= 0) & (owner_t[None, :] % copies == copy)
        x = torch.where(masked, self.mask_id, truth[None, :])
        token_logp = torch.zeros(len(ids), device=self.device)
        passes = 0
        for start in range(0, copies, batch):
            logits = self.model(x[start:start + batch])
            passes += 1
            logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, truth.expand(len(logits), -1)[..., None])
            token_logp += (logp.squeeze(-1) * masked[start:start + batch]).sum(dim=0)
        words_of = owner_t[owner_t >= 0]
        total = torch.zeros(len(words), device=self.device).index_add_(0, words_of, token_logp[owner_t >= 0])
        tokens = torch.bincount(words_of, minlength=len(words)).clamp(min=1)
        return (total / tokens).tolist(), passes

    def infill(self, canvases: list[tuple[list, list[int]]], params: sampler.SamplerParams,
               seed: int) -> list[Generation]:
        """Fills the gaps of each canvas, given as (segments, masks per gap) (``core.pipeline.infill``), with
        the reference step over every mask at once, committing as many per step as ``params`` commits
        per answer token. A Generation's text is the whole filled prompt, its token ids the fills."""
        rows, slots = [], []
        for runs, counts in canvases:
            ids = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
            kept = iter(spaced_tokens(self.tokenizer, [s.text for s in runs if s.kept]))
            gaps, where = iter(counts), []
            for segment in runs:
                if segment.kept:
                    ids += next(kept)
                else:
                    count = next(gaps)
                    where.append(range(len(ids), len(ids) + count))
                    ids += [self.mask_id] * count
            rows.append(ids)
            slots.append(where)
        check_lengths([len(ids) for ids in rows], 0, self.info.max_length)
        size = min(len(rows), self.max_batch or len(rows))
        results, self.max_batch = halving_on_oom(
            list(zip(rows, slots)), lambda chunk: self._infill(chunk, params, seed), size, self.notes.append)
        return results

    def _infill(self, chunk: list[tuple[list[int], list[range]]], params: sampler.SamplerParams,
                seed: int) -> list[Generation]:
        prompt, attention_mask = left_pad([ids for ids, _ in chunk], self.eos_id)
        masks = max(sum(len(r) for r in where) for _, where in chunk)
        steps = max(1, -(-masks * params.steps // params.gen_length))
        rng = torch.Generator(device=self.device).manual_seed(int(seed))
        started = time.perf_counter()
        out = sampler.infill(self.model, prompt.to(self.device), steps=steps, mask_id=self.mask_id,
                             temperature=params.temperature, remasking=params.remasking, rng=rng,
                             attention_mask=attention_mask.to(self.device) if len(chunk) > 1 else None)
        seconds = time.perf_counter() - started
        results = []
        for row, (ids, where) in enumerate(chunk):
            filled = out[row, prompt.shape[1] - len(ids):].tolist()
            ends = {self.eos_id, self.eot_id}
            fills = [filled[i] for r in where for i in r]
            # A gap's fill that decodes to an end token is no word: it is left out.
            kept = [t for i, t in enumerate(filled) if not (t in ends and any(i in r for r in where))]
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            results.append(Generation(text=text.strip(), token_ids=fills, seconds=seconds, forward_calls=steps,
                                      pieces=self.tokenizer.batch_decode([[t] for t in fills]),
                                      tokens_processed=steps * len(ids)))
        return results

    def _generate(self, encoded: list[list[int]], params: sampler.SamplerParams, seed: int,
                  on_step: StepCallback | None) -> list[Generation]:
        prompt, attention_mask = left_pad(encoded, self.eos_id)
        width = prompt.shape[1]
        rng = torch.Generator(device=self.device).manual_seed(int(seed))
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        out, trace = run_sampler(
            self.model, prompt.to(self.device), attention_mask.to(self.device) if len(encoded) > 1 else None, params,
            mask_id=self.mask_id, eos_id=self.eos_id, eot_id=self.eot_id, rng=rng,
            on_step=None if on_step is None else (lambda done, total, _x: on_step(done, total)))
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        steps, probs, positions = trace.commit_step.tolist(), trace.commit_prob.tolist(), trace.positions.tolist()
        results = []
        for row in range(len(encoded)):
            ids = out[row, width:].tolist()
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            results.append(Generation(text=text.strip(), token_ids=ids, seconds=seconds,
                                      forward_calls=trace.forward_calls, commit_steps=steps[row],
                                      commit_probs=probs[row], pieces=self.tokenizer.batch_decode([[i] for i in ids]),
                                      tokens_processed=positions[row], peak_memory_bytes=peak))
        return results
