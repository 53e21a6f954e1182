"""LLaDA 2.x's sampler: block diffusion over a block-causal model, as its authors' ``generate`` decodes it.

Blocks of ``block_length`` are counted from each row's first real token (position 0), so the prompt's
last, partial block is the first one the answer fills. The canvas runs to the end of the block that
holds position prompt + ``gen_length``; the answer returned is its first ``gen_length`` tokens. Block by
block, every step proposes a token for each position of the current block (argmax, or a draw after
temperature, top-k and top-p) with its probability, and then:

- commits masks: every masked position whose probability exceeds ``threshold`` when there are at least
  as many of them as the schedule's count for the step (an even split of the block over ``steps``),
  else the schedule's count of most probable ones;
- with ``editing_threshold`` >= 0 (LLaDA 2.1), also edits: a position of the block that held an answer
  token when the step began, whose proposal differs from it with probability above the editing
  threshold, takes the proposal. A block then ends when a step neither commits nor edits, or after
  ``max_post_steps`` steps with no mask left.

A row stops after a block whose answer part holds EOS; with ``eos_early_stop`` (and no editing, as the authors)
as soon as its first EOS has no mask before it. What a row leaves unfilled is EOS.

The model sees the window up to the current block's end; the blocks past it are hidden by the
block-causal attention, so every row of a batch is computed on one canvas. With ``cache`` the keys and
values of finished blocks are kept and each step computes the current block alone (a finished block
once more, on the next block's first step, with its final tokens): exact, since under block-causal
attention nothing earlier depends on what comes later.
"""

from __future__ import annotations

from typing import Callable

import torch

from core.llada.dream import filter_logits
from core.llada.moe import block_causal_mask
from core.llada.sampler import Trace


def schedule(block_length: int, steps: int) -> list[int]:
    """Masks to commit at each step of a block: an even split, the first ``block_length % steps`` steps one more."""
    steps = max(1, min(steps, block_length))
    base, extra = divmod(block_length, steps)
    return [base + (i < extra) for i in range(steps)]


def propose(logits: torch.Tensor, temperature: float, top_p: float, top_k: int,
            rng: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, p) for logits (..., V): with no temperature and no filter, the most probable token and its probability;
    else a draw after temperature, top-k, then top-p, and its probability there (the authors' order)."""
    logits = logits.float()
    if temperature == 0 and top_p >= 1 and top_k <= 0:
        p, x0 = logits.softmax(dim=-1).max(dim=-1)
        return x0, p
    if temperature > 0:
        logits = logits / temperature
    probs = filter_logits(filter_logits(logits, 1.0, top_k), top_p, 0).softmax(dim=-1)
    x0 = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=rng).view(probs.shape[:-1])
    return x0, probs.gather(-1, x0[..., None]).squeeze(-1)


@torch.no_grad()
def generate(model, prompt: torch.Tensor, attention_mask: torch.Tensor | None = None, *, gen_length: int = 256,
             block_length: int = 32, steps: int = 32, threshold: float = 0.95, temperature: float = 0.0,
             top_p: float = 1.0, top_k: int = 0, editing_threshold: float = -1.0, max_post_steps: int = 16,
             eos_early_stop: bool = True, cache: bool = False, mask_id: int = 156895, eos_id: int = 156892,
             rng: torch.Generator | None = None, on_step: Callable[[int, int, torch.Tensor], None] | None = None,
             trace: Trace | None = None) -> torch.Tensor:
    """Returns the canvas (B, prompt_len + gen_length). ``prompt`` is left-padded where rows differ in length, with
    ``attention_mask`` marking its real tokens; a mask token typed into a prompt is text, not a slot."""
    B, P = prompt.shape
    device = prompt.device
    L = block_length
    real_prompt = torch.ones_like(prompt) if attention_mask is None else attention_mask.long()
    own_prompt = real_prompt.sum(dim=1)
    pad = P - own_prompt  # each row's left padding; its own position 0 is canvas position pad
    first_block = own_prompt // L
    blocks = (own_prompt + gen_length + L - 1) // L - first_block  # answer blocks per row (one more or not)
    width = P + gen_length + 2 * L  # room for the last block, and for a finished row's idle span
    x = torch.full((B, width), mask_id, dtype=torch.long, device=device)
    x[:, :P] = prompt
    answer = torch.zeros_like(x, dtype=torch.bool)
    answer[:, P:] = True
    real = torch.cat([real_prompt.bool(), torch.ones(B, width - P, dtype=torch.bool, device=device)], dim=1)
    # Each row's own positions; padding, hidden from every query, sits at 0.
    own = (torch.arange(width, device=device) - pad[:, None]).clamp(min=0)
    settled_step = torch.zeros(B, width, dtype=torch.long, device=device)
    settled_prob = torch.zeros(B, width, dtype=torch.float32, device=device)
    stopped = torch.zeros(B, dtype=torch.bool, device=device)
    per_step = schedule(L, steps)
    editing = editing_threshold >= 0
    kv = model.new_cache(B, width) if cache else None
    rows = torch.arange(B, device=device)[:, None]
    step_count, planned_steps = 0, int(blocks.max()) * len(per_step)
    for j in range(int(blocks.max())):
        active_row = ~stopped & (j < blocks)
        if not active_row.any():
            break
        start = pad + (first_block + j) * L  # the current block's canvas span, per row
        start = torch.where(active_row, start, start[active_row][0])  # a finished row idles on a live row's span
        span = start[:, None] + torch.arange(L, device=device)
        window_end = int((start + L).max())
        post_steps = torch.zeros(B, dtype=torch.long, device=device)
        done = ~active_row
        step = 0
        while not done.all():
            block = x.gather(1, span)
            is_answer = answer.gather(1, span)
            masked = (block == mask_id) & is_answer & ~done[:, None]
            if editing:
                post_steps += (~done & ~masked.any(dim=1)).long()
                done |= post_steps > max_post_steps
                if done.all():
                    break
            elif not masked.any():
                break
            logits = _block_logits(model, x, real, own, span, L, j, step, window_end, kv, trace)
            x0, p = propose(logits, temperature, top_p, top_k, rng)
            n = per_step[min(step, len(per_step) - 1)]
            conf = torch.where(masked, p, -torch.inf)
            above = conf > threshold
            enough = above.sum(dim=1, keepdim=True) >= n
            top = torch.zeros_like(masked).scatter(1, conf.topk(min(n, L), dim=1).indices, True) & masked
            commit = torch.where(enough, above, top)
            edit = torch.zeros_like(commit)
            if editing:
                edit = ~masked & is_answer & ~done[:, None] & (block != mask_id) & (p > editing_threshold) & (x0 != block)
            change = commit | edit
            step += 1
            step_count += 1
            where = rows.expand_as(span)[change], span[change]
            x[where] = x0[change]
            settled_step[where] = step_count
            settled_prob[where] = p[change]
            left = ((x.gather(1, span) == mask_id) & is_answer).any(dim=1)
            done |= ~left & ~change.any(dim=1) if editing else ~left
            if eos_early_stop and not editing:
                finished = _answer_ended(x, answer, mask_id, eos_id, before_masks=True)
                stopped |= finished
                done |= finished
            if on_step is not None:
                on_step(step_count, planned_steps, x[:, :P + gen_length])
        stopped |= _answer_ended(x[:, :window_end], answer[:, :window_end], mask_id, eos_id, before_masks=False)
    x[(x == mask_id) & answer] = eos_id
    if trace is not None:
        trace.commit_step[:] = settled_step[:, P:P + gen_length]
        trace.commit_prob[:] = settled_prob[:, P:P + gen_length]
    return x[:, :P + gen_length]


def _answer_ended(x: torch.Tensor, answer: torch.Tensor, mask_id: int, eos_id: int, before_masks: bool) -> torch.Tensor:
    """Rows whose answer holds EOS; with ``before_masks``, only where no mask comes before its first EOS."""
    is_eos = (x == eos_id) & answer
    if not before_masks:
        return is_eos.any(dim=1)
    first_eos = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), x.shape[1])
    positions = torch.arange(x.shape[1], device=x.device)
    masks_before = ((x == mask_id) & answer & (positions < first_eos[:, None])).any(dim=1)
    return is_eos.any(dim=1) & ~masks_before


def _block_logits(model, x, real, own, span, L, j, step, window_end, kv, trace) -> torch.Tensor:
    """(B, L, V): the current block's logits. Without a cache, one forward over the window; with it, the whole
    window on the first block's first step (filling the cache), then the current block alone, the block before
    it included on a block's first step."""
    B = x.shape[0]
    if kv is None or (j == 0 and step == 0):
        window = slice(0, window_end)
        if kv is None:
            logits = model(x[:, window], attention_mask=real[:, window].long(), block_length=L)
        else:
            index = torch.arange(window_end, device=x.device).expand(B, -1)
            logits = model.forward_cached(x[:, window], own[:, window], index,
                                          block_causal_mask(own[:, window], own, real, L), kv)
        computed = real[:, :window_end].sum(dim=1)
        logits = logits.gather(1, span[:, :, None].expand(-1, -1, logits.shape[-1]))
    else:
        index = torch.cat([span - L, span], dim=1) if step == 0 else span
        positions = own.gather(1, index)
        logits = model.forward_cached(x.gather(1, index), positions, index, block_causal_mask(positions, own, real, L),
                                      kv, logits_from=index.shape[1] - L)
        computed = index.shape[1]
    if trace is not None:
        trace.positions += computed
        trace.forward_calls += 1
    return logits
