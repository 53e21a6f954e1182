"""Dream's sampler, beside LLaDA's: the answer is one canvas of masks (no blocks), unmasked over ``steps``
steps while the timestep falls from 1 to ``eps``.

Step i runs from t = timesteps[i] to s = timesteps[i + 1], with timesteps = linspace(1, eps, steps + 1).
Every masked position gets a proposal from the model's logits (the model applies Dream's shift: the
state at position j - 1 predicts token j), after temperature, top-p and top-k. Then one of four rules
commits some of them:

- ``origin``: each masked position independently, with probability 1 - s/t (all of them at the last step);
- ``maskgit_plus``, ``topk_margin``, ``entropy``: the n most confident masked positions, where n is
  int(masks * (1 - s/t)) (all of them at the last step) and confidence is the proposal's probability,
  the margin between the two most probable tokens, or the negative entropy of the distribution.
  With ``alg_temp`` > 0 the n positions are drawn without replacement from softmax(confidence / alg_temp).

This restates the authors' ``diffusion_generate``; probabilities are computed in float32.
"""

from __future__ import annotations

from typing import Callable

import torch

from core.llada.sampler import DREAM_ALGS, Trace


def filter_logits(logits: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    """Top-p (the smallest set of most probable tokens whose mass reaches ``top_p``; 1 keeps all), then
    top-k (0 keeps all); what is filtered out gets the dtype's lowest value, as the authors do."""
    lowest = torch.finfo(logits.dtype).min
    if top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative > top_p
        remove[..., 1:] = remove[..., :-1].clone()  # keep the token that crosses top_p
        remove[..., 0] = False
        logits = logits.masked_fill(torch.zeros_like(remove).scatter(-1, order, remove), lowest)
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth, lowest)
    return logits


def propose(logits: torch.Tensor, *, temperature: float, top_p: float, top_k: int, alg: str,
            rng: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, x0) for rows of logits (N, V): the proposal (most probable, or sampled when temperature > 0)
    and the confidence ``alg`` ranks it by."""
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    probs = filter_logits(logits, top_p, top_k).softmax(dim=-1)
    if temperature > 0:
        x0 = torch.multinomial(probs, 1, generator=rng).squeeze(-1)
        confidence = probs.gather(-1, x0[:, None]).squeeze(-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if alg == "topk_margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    elif alg == "entropy":
        confidence = (probs * torch.log(probs + 1e-10)).sum(dim=-1)
    return confidence, x0


def commit_count(masks: float, i: int, steps: int, t: float, s: float) -> int:
    """How many masks a confidence rule commits at step i: a share 1 - s/t of them, all at the last step."""
    return int(masks * (1 - s / t)) if i < steps - 1 else int(masks)


@torch.no_grad()
def generate(model, prompt: torch.Tensor, attention_mask: torch.Tensor | None = None, *, steps: int = 256,
             gen_length: int = 256, eps: float = 1e-3, alg: str = "entropy", alg_temp: float = 0.0,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, mask_id: int = 151666,
             rng: torch.Generator | None = None, on_step: Callable[[int, int, torch.Tensor], None] | None = None,
             trace: Trace | None = None) -> torch.Tensor:
    """Returns the canvas (B, prompt_len + gen_length). ``prompt`` is left-padded where rows differ in length,
    with ``attention_mask`` marking its real tokens; a mask token typed into a prompt is text, not a slot."""
    if alg not in DREAM_ALGS:
        raise ValueError(f"alg must be one of {', '.join(DREAM_ALGS)}")
    B, P = prompt.shape
    device = prompt.device
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long, device=device)
    x[:, :P] = prompt
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(B, gen_length)], dim=1)
    timesteps = torch.linspace(1, eps, steps + 1, dtype=torch.float64).tolist()
    common = dict(temperature=temperature, top_p=top_p, top_k=top_k, alg=alg, rng=rng)
    for i in range(steps):
        mask_index = x == mask_id
        mask_index[:, :P] = False
        logits = model(x, attention_mask=attention_mask)
        if trace is not None:
            trace.computed(0, x.shape[1])
        t, s = timesteps[i], timesteps[i + 1]
        before = x.clone()
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1.0
            where = mask_index & (torch.rand(x.shape, dtype=torch.float64, device=device, generator=rng) < p_transfer)
            if where.any():
                x[where] = propose(logits[where], **common)[1]
        else:
            confidence, x0 = propose(logits[mask_index], **common)
            n = commit_count(mask_index.sum().item() / B, i, steps, t, s)
            if n > 0:
                ranked = torch.full(x.shape, -torch.inf, device=device)
                ranked[mask_index] = confidence
                if alg_temp > 0:
                    chosen = torch.multinomial((ranked / alg_temp).softmax(dim=-1), n, generator=rng)
                else:
                    chosen = torch.topk(ranked, n, dim=-1).indices
                proposals = torch.full_like(x, mask_id)
                proposals[mask_index] = x0
                where = torch.zeros_like(mask_index).scatter(1, chosen, True) & mask_index
                x[where] = proposals[where]
        if trace is not None:
            committed = (x != before)[:, P:]
            trace.committed(i + 1, committed, logits[:, P:], x[:, P:], P)
        if on_step is not None:
            on_step(i + 1, steps, x)
    return x
