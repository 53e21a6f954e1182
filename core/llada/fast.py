"""The fast sampler, beside the reference loop of ``sampler.py``.

With no approximation switched on it runs the reference algorithm with less work per step and,
at temperature 0, commits the same tokens:

- the final norm, the LM head, the softmax and the noise run on the active block's positions
  only, never on B x T x vocabulary logits (the reference's memory hog);
- a step whose schedule commits nothing skips its forward pass;
- on CUDA the forward pass is captured once as a CUDA graph and replayed: its shapes are fixed,
  and replaying removes the launch overhead of hundreds of small kernels per step.

(At temperature > 0 it samples from the same distribution as the reference, but draws noise for
fewer positions, so its random stream, and therefore its tokens, differ.)

Approximations, each opt-in and each labelled approximate where it is offered:

- ``cache="prefix"``: keys and values of the positions before the active block come from one
  full pass at the block's start and are reused at every step of the block; ``"dual"`` reuses
  those after the block too, so a step computes the block alone (Fast-dLLM);
- ``threshold``: a step commits every masked position of the block whose confidence exceeds it,
  and at least the most confident one, instead of the fixed schedule (parallel decoding);
- ``entropy_threshold``: dParallel's rule, the same with the entropy of each position's distribution:
  every masked position of the block whose entropy is at most the threshold, and at least the
  lowest-entropy one (what dParallel-LLaDA was distilled to decode with);
- ``early_stop``: once every row has completed a block that holds EOS or EOT, the rest is EOS;
- ``window``: only ``window`` positions past the active block take part in the forward pass; the
  all-mask tail beyond is skipped and every position keeps its place (as in Elastic-dLLM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from core.llada.model import LayerCache, LLaDA
from core.llada.sampler import (CACHES, LAST_CONFIDENCE, Trace, add_gumbel_noise, get_num_transfer_tokens,
                                most_confident)


@dataclass
class FastResult:
    canvas: torch.Tensor  # (B, prompt_len + gen_length)
    forward_calls: int


@torch.no_grad()
def generate(model: LLaDA, prompt: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
             steps: int = 128, gen_length: int = 128, block_length: int = 128, temperature: float = 0.0,
             remasking: str = "low_confidence", mask_id: int = 126336, eos_id: int = 126081, eot_id: int = 126348,
             logits_eos_inf: bool = False, confidence_eos_eot_inf: bool = False,
             rng: torch.Generator | None = None, cache: str = "none", threshold: float = 0.0,
             early_stop: bool = False, window: int | None = None, entropy_threshold: float = 0.0,
             cuda_graph: bool = True,
             on_step: Callable[[int, int, torch.Tensor], None] | None = None,
             trace: Trace | None = None) -> FastResult:
    """Same canvas layout and arguments as ``sampler.generate`` (no classifier-free guidance). A
    token's commit step in ``trace`` is the reference's step of the schedule, or with a threshold
    (of confidence or entropy) the forward pass that committed it."""
    B, P = prompt.shape
    T = P + gen_length
    device = prompt.device
    x = torch.full((B, T), mask_id, dtype=torch.long, device=device)
    x[:, :P] = prompt
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.ones(B, gen_length, dtype=attention_mask.dtype,
                                                               device=device)], dim=1)
    assert gen_length % block_length == 0 and cache in CACHES
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    # Where each step's logits come from is decided once: a full pass, or a prefix / dual cache.
    source = (FullPass(model, x, attention_mask, block_length, window=window, cuda_graph=cuda_graph) if cache == "none"
              else CachedPass(model, x, attention_mask, block_length, dual=cache == "dual", window=window,
                              cuda_graph=cuda_graph))
    calls = 0
    parallel = threshold > 0 or entropy_threshold > 0  # commits by a threshold, not the schedule

    for num_block in range(num_blocks):
        start, end = P + num_block * block_length, P + (num_block + 1) * block_length
        source.begin_block(start, end)
        num_transfer_tokens = get_num_transfer_tokens(x[:, start:end] == mask_id, steps)
        step = 0  # of the schedule; with a threshold, forward passes in this block
        while (masked := x[:, start:end] == mask_id).any():
            if not parallel:
                if step == steps:
                    break
                step += 1
                if not num_transfer_tokens[:, step - 1].any():
                    continue  # the reference's forward pass here would commit nothing
            else:
                step += 1
            logits = source.logits(x)
            calls += 1
            if trace is not None:
                trace.computed(*source.span)
            if logits_eos_inf:
                logits[:, :, eos_id] = -torch.inf

            x0 = torch.argmax(add_gumbel_noise(logits, temperature, rng), dim=-1)
            if remasking == "low_confidence":
                p = F.softmax(logits.to(torch.float64), dim=-1)
                x0_p = torch.gather(p, dim=-1, index=x0.unsqueeze(-1)).squeeze(-1)
            else:  # drawn for the whole canvas, as the reference does, so the same stream gives the same order
                x0_p = torch.rand((B, T), dtype=torch.float64, device=device, generator=rng)[:, start:end]
            if confidence_eos_eot_inf:
                x0_p = torch.where((x0 == eos_id) | (x0 == eot_id), LAST_CONFIDENCE, x0_p)
            confidence = torch.where(masked, x0_p, -torch.inf)

            if entropy_threshold:
                transfer_index = low_entropy(logits, masked, entropy_threshold)
            elif threshold:
                transfer_index = confident(confidence, masked, threshold)
            else:
                transfer_index = scheduled(confidence, num_transfer_tokens[:, step - 1], start, T)
            x[:, start:end] = torch.where(transfer_index, x0, x[:, start:end])
            if trace is not None:
                trace.committed(calls if parallel else num_block * steps + step, transfer_index, logits, x0, start)
            if on_step is not None:
                on_step(num_block * steps + min(step, steps), num_blocks * steps, x)

        if early_stop and ended(x[:, P:end], eos_id, eot_id).all():
            x[:, end:] = eos_id
            break
    return FastResult(x, calls)


class FullPass:
    """Logits from a forward pass over the canvas at every step (over [0, end + window) with a window);
    on CUDA without a window, one captured graph replayed for every step. ``span`` is the range of
    canvas positions the last pass computed."""

    def __init__(self, model: LLaDA, x: torch.Tensor, attention_mask: torch.Tensor | None, block_length: int, *,
                 window: int | None, cuda_graph: bool):
        self.model, self.x, self.window, self.block_length = model, x, window, block_length
        self.rope = Rope(model, attention_mask, *x.shape)
        self.capture = cuda_graph and x.is_cuda and window is None
        self.graphed = None

    def begin_block(self, start: int, end: int) -> None:
        self.start, self.block = start, torch.arange(start, end, device=self.x.device)
        self.seen = self.x.shape[1] if self.window is None else min(self.x.shape[1], end + self.window)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.span = (0, self.seen)
        if self.capture and self.graphed is None:
            self.graphed = GraphedLogits(lambda canvas, positions: block_logits(self.model, canvas, self.rope,
                                                                                positions, x.shape[1]),
                                         x, self.start, self.block_length)
        if self.graphed is not None:
            return self.graphed(x, self.start)
        return block_logits(self.model, x, self.rope, self.block, self.seen)


class CachedPass(FullPass):
    """Logits from a key/value cache: a block's first step is a full pass that refills it; later steps
    recompute the block alone (``dual``) or the block and what follows it (``prefix``). On CUDA
    without a window, the dual step is one captured graph."""

    def __init__(self, model: LLaDA, x: torch.Tensor, attention_mask: torch.Tensor | None, block_length: int, *,
                 dual: bool, window: int | None, cuda_graph: bool):
        super().__init__(model, x, attention_mask, block_length, window=window, cuda_graph=cuda_graph)
        self.dual = dual
        self.capture = self.capture and self.dual  # a prefix step's width changes from block to block
        self.kv = KVCache(model, x.shape[0], x.shape[1], x.device) if window is None else None

    def begin_block(self, start: int, end: int) -> None:
        super().begin_block(start, end)
        if self.window is not None:
            self.kv = KVCache(self.model, self.x.shape[0], self.seen, self.x.device)
        self.fresh = False  # whether this block's full pass has filled the cache

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        model, device = self.model, x.device
        if not self.fresh:
            if self.capture and self.graphed is None:
                # Captured before the full pass, which then overwrites what the capture's warm-up wrote.
                self.graphed = GraphedLogits(
                    lambda canvas, positions: cached_logits(model, canvas, self.rope, self.kv,
                                                            recomputed_for(model, positions), positions),
                    x, self.start, self.block_length)
            self.fresh = True
            self.span = (0, self.seen)
            return cached_logits(model, x, self.rope, self.kv, torch.arange(self.seen, device=device), self.block)
        last = self.start + self.block_length if self.dual else self.seen
        self.span = (self.start - int(model.cfg.shifted_prediction), last)  # as recomputed_for widens it
        if self.graphed is not None:
            return self.graphed(x, self.start)
        recomputed = self.block if self.dual else torch.arange(self.start, self.seen, device=device)
        return cached_logits(model, x, self.rope, self.kv, recomputed_for(model, recomputed), self.block)


def scheduled(confidence: torch.Tensor, k: torch.Tensor, start: int, width: int) -> torch.Tensor:
    """The reference's choice: the k most confident per row, ranked over the whole canvas row as it
    ranks them, so that ties resolve to the same positions."""
    B, L = confidence.shape
    row = torch.full((B, width), -torch.inf, dtype=confidence.dtype, device=confidence.device)
    row[:, start:start + L] = confidence
    return most_confident(row, k)[:, start:start + L]


def confident(confidence: torch.Tensor, masked: torch.Tensor, threshold: float) -> torch.Tensor:
    """Every masked position above the threshold, and each row's most confident one whatever it is."""
    return with_the_best(confidence > threshold, confidence.argmax(dim=-1, keepdim=True), masked)


def low_entropy(logits: torch.Tensor, masked: torch.Tensor, threshold: float) -> torch.Tensor:
    """Every masked position whose distribution's entropy (nats, float64) is at most the threshold, and each
    row's lowest-entropy masked position whatever it is."""
    p = F.softmax(logits.to(torch.float64), dim=-1)
    entropy = -(p * torch.log(p + 1e-12)).sum(dim=-1)
    entropy = torch.where(masked, entropy, torch.inf)
    return with_the_best(masked & (entropy <= threshold), entropy.argmin(dim=-1, keepdim=True), masked)


def with_the_best(chosen: torch.Tensor, best: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """``chosen``, with each row's ``best`` position (B, 1) added where the row has a masked position left."""
    return chosen.scatter(1, best, masked.any(dim=-1, keepdim=True) | chosen.gather(1, best))


def ended(answer: torch.Tensor, eos_id: int, eot_id: int) -> torch.Tensor:
    """(B,) whether each row's committed answer holds an end token."""
    return ((answer == eos_id) | (answer == eot_id)).any(dim=-1)


class Rope:
    """Per-row RoPE angles and padding mask of the canvas, computed as ``LLaDA.hidden_states`` does,
    so that any slice of positions keeps each row's own positions."""

    def __init__(self, model: LLaDA, attention_mask: torch.Tensor | None, B: int, T: int):
        self.cos, self.sin, self.key_mask = model.rope_inputs(attention_mask, B, T)

    def at(self, first: int, last: int):
        return self.cos[:, :, first:last], self.sin[:, :, first:last]

    def keys(self, last: int):
        return None if self.key_mask is None else self.key_mask[..., :last]


def block_logits(model: LLaDA, x: torch.Tensor, rope: Rope, block: torch.Tensor, seen: int) -> torch.Tensor:
    """A full forward pass over positions [0, seen); norm and head for the positions ``block`` only."""
    t = model.model.transformer
    cos, sin = rope.at(0, seen)
    h = t.wte(x[:, :seen])
    for layer in t.blocks:
        h = layer(h, cos, sin, rope.keys(seen))
    return model.lm_head(t.ln_f(h.index_select(1, model.predicting_positions(block))))


def recomputed_for(model: LLaDA, positions: torch.Tensor) -> torch.Tensor:
    """The consecutive positions ``positions`` and, with shifted prediction, the one before them,
    whose state predicts the first of them."""
    if not model.cfg.shifted_prediction:
        return positions
    return torch.cat([model.predicting_positions(positions[:1]), positions])


class KVCache:
    """Keys and values (after RoPE) of every layer for positions [0, length)."""

    def __init__(self, model: LLaDA, B: int, length: int, device: torch.device):
        cfg = model.cfg
        dtype = model.model.transformer.wte.weight.dtype
        shape = (B, cfg.n_kv_heads, length, cfg.head_dim)
        self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.length = length


def cached_logits(model: LLaDA, x: torch.Tensor, rope: Rope, kv: KVCache, recomputed: torch.Tensor,
                  block: torch.Tensor) -> torch.Tensor:
    """Recompute the consecutive positions ``recomputed``, refreshing their cache entries; every other
    position's keys and values come from the cache. Logits for the positions ``block`` among them."""
    t = model.model.transformer
    cos, sin = rope.cos.index_select(2, recomputed), rope.sin.index_select(2, recomputed)
    h = t.wte(x.index_select(1, recomputed))
    for layer, k_cache, v_cache in zip(t.blocks, kv.k, kv.v):
        h = layer(h, cos, sin, rope.keys(kv.length), LayerCache(k_cache, v_cache, recomputed))
    return model.lm_head(t.ln_f(h.index_select(1, model.predicting_positions(block) - recomputed[0])))


def capture(run: Callable[[], torch.Tensor]) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """A CUDA graph of ``run`` and its output buffer; ``run`` reads only static buffers."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()  # warm-up: kernels chosen and workspaces allocated before capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    return graph, out


class GraphedLogits:
    """``logits(canvas, block)`` captured once as a CUDA graph for this batch, canvas and block length.

    A replay reads the canvas and the block's first position from static buffers, so one capture
    serves every step of every block: the exact pass, or the dual-cache step against a cache that
    each block's full pass refills. Every buffer the graph reads is kept on self: a freed one would
    be reused under the graph.
    """

    def __init__(self, logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, start: int,
                 block_length: int):
        self.x = x.clone()
        self.start = torch.tensor(start, dtype=torch.long, device=x.device)
        self.offsets = torch.arange(block_length, device=x.device)
        self.graph, self.logits = capture(lambda: logits(self.x, self.start + self.offsets))

    def __call__(self, x: torch.Tensor, start: int) -> torch.Tensor:
        self.x.copy_(x)
        self.start.fill_(start)
        self.graph.replay()
        return self.logits.clone()  # the caller edits logits in place (logits_eos_inf)
