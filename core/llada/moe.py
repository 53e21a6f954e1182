"""The mixture-of-experts LLaDAs in one file: LLaDA-MoE-7B-A1B and LLaDA 2.x (mini).

Both are pre-norm transformers with RMSNorm, per-head RMSNorm on queries and keys before RoPE, and
SwiGLU experts. What differs is switched by the config:

- attention: bidirectional (LLaDA-MoE), or block-causal (LLaDA 2.x): bidirectional inside a block of
  ``block_causal`` positions, causal across blocks, blocks counted from each row's first real token;
- RoPE over the whole head, or its first ``rotary_dim`` dimensions (LLaDA 2.x rotates half);
- the router: ``softmax`` (LLaDA-MoE: softmax over the experts, the top k with their probabilities as
  they are) or ``sigmoid_grouped`` (LLaDA 2.x: sigmoid scores; a per-expert bias that only selects;
  experts in ``n_group`` groups, each group scored by the sum of its two best, the best ``topk_group``
  groups kept; the top k's unbiased scores normalised to sum 1 and scaled by ``routed_scaling``);
- the first ``dense_layers`` layers are a dense SwiGLU, and ``shared_experts`` add an always-on expert.

Experts run as grouped work: the routed (token, expert) pairs are sorted by expert into one padded batch,
a row per expert, and three batched matrix products run every expert at once. Weights live stacked per layer,
(experts, out, in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.llada.model import RMSNorm, rotate_half

ROUTERS = ("softmax", "sigmoid_grouped")


@dataclass
class MoEConfig:
    d_model: int = 2048
    n_heads: int = 16
    n_kv_heads: int = 16
    head_dim: int = 128
    n_layers: int = 16
    vocab_size: int = 157184
    max_sequence_length: int = 8192
    rope_theta: float = 50000.0
    rotary_dim: int = 128  # the leading dimensions of each head that RoPE turns
    rms_norm_eps: float = 1e-5
    dense_layers: int = 0  # the first layers are a dense SwiGLU of dense_hidden
    dense_hidden: int = 8192
    n_experts: int = 64
    top_k: int = 8
    expert_hidden: int = 1024
    shared_experts: int = 0  # an always-on SwiGLU of shared_experts * expert_hidden
    router: str = "softmax"
    n_group: int = 1
    topk_group: int = 1
    routed_scaling: float = 1.0
    block_causal: int = 0  # 0: bidirectional; else the block length of block-causal attention
    mask_token_id: int = 156895
    eos_token_id: int = 156892
    pad_token_id: int = 156892
    eot_token_id: int | None = None

    @classmethod
    def from_dict(cls, raw: dict) -> "MoEConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known and v is not None})


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE (half-split) on the first cos.shape[-1] dimensions of each head; the rest pass through."""
    d = cos.shape[-1]
    turned, kept = x[..., :d].float(), x[..., d:]
    return torch.cat([(turned * cos + rotate_half(turned) * sin).to(x.dtype), kept], dim=-1)


def swiglu(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)


def route(scores_logits: torch.Tensor, cfg: MoEConfig, expert_bias: torch.Tensor | None):
    """(weights, experts), each (tokens, top_k), from the router's logits (tokens, n_experts) in float32."""
    logits = scores_logits.float()
    if cfg.router == "softmax":
        weights, experts = logits.softmax(dim=-1).topk(cfg.top_k, dim=-1)
        return weights, experts
    scores = logits.sigmoid()
    biased = scores + expert_bias.float()
    grouped = biased.view(len(biased), cfg.n_group, -1)
    group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)
    kept_groups = group_scores.topk(cfg.topk_group, dim=-1).indices
    keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter(1, kept_groups, True)
    biased = grouped.masked_fill(~keep[..., None], -torch.inf).view_as(biased)
    experts = biased.topk(cfg.top_k, dim=-1).indices
    weights = scores.gather(1, experts)
    weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * cfg.routed_scaling, experts


def block_causal_mask(query_positions: torch.Tensor, key_positions: torch.Tensor, key_real: torch.Tensor | None,
                      block_length: int) -> torch.Tensor:
    """(B, 1, queries, keys): a key is seen from the query's block and the blocks before it, never from padding."""
    allowed = (key_positions // block_length)[:, None, :] <= (query_positions // block_length)[:, :, None]
    if key_real is not None:
        allowed = allowed & key_real[:, None, :]
    return allowed[:, None]


class Attention(nn.Module):
    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.d_model, (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        self.out = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def project(self, x, cos, sin):
        """q (B, heads, T, hd) and k, v (B, kv heads, T, hd): per-head RMSNorm on q and k, then RoPE."""
        B, T, _ = x.shape
        cfg, hd = self.cfg, self.cfg.head_dim
        q, k, v = self.qkv(x).view(B, T, -1, hd).split([cfg.n_heads, cfg.n_kv_heads, cfg.n_kv_heads], dim=2)
        q, k = rope(self.q_norm(q).transpose(1, 2), cos, sin), rope(self.k_norm(k).transpose(1, 2), cos, sin)
        return q, k, v.transpose(1, 2)

    def attend(self, q, k, v, mask):
        cfg = self.cfg
        if cfg.n_kv_heads != cfg.n_heads:
            k = k.repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=1)
            v = v.repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1 / math.sqrt(cfg.head_dim))
        B, _, T, _ = q.shape
        return self.out(y.transpose(1, 2).reshape(B, T, -1))

    def forward(self, x, cos, sin, mask):
        return self.attend(*self.project(x, cos, sin), mask)

    def forward_cached(self, x, cos, sin, mask, cache: tuple[torch.Tensor, torch.Tensor], index: torch.Tensor):
        """Attention of the positions ``index`` (B, T) of a canvas over the whole canvas: their keys and values
        are written into ``cache`` (the canvas's, (B, kv heads, W, hd) each) first; ``mask`` (B, 1, T, W)."""
        q, k, v = self.project(x, cos, sin)
        where = index[:, None, :, None].expand_as(k)
        cache[0].scatter_(2, where, k.to(cache[0].dtype))
        cache[1].scatter_(2, where, v.to(cache[1].dtype))
        return self.attend(q, cache[0], cache[1], mask)


class Experts(nn.Module):
    """Routed SwiGLU experts, stacked (n_experts, out, in), plus the always-on shared ones."""

    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        e, h, d = cfg.n_experts, cfg.expert_hidden, cfg.d_model
        self.router = nn.Parameter(torch.empty(e, d))
        self.gate = nn.Parameter(torch.empty(e, h, d))
        self.up = nn.Parameter(torch.empty(e, h, d))
        self.down = nn.Parameter(torch.empty(e, d, h))
        if cfg.router == "sigmoid_grouped":
            self.register_buffer("expert_bias", torch.zeros(e, dtype=torch.float32))
        else:
            self.expert_bias = None
        if cfg.shared_experts:
            shared = cfg.shared_experts * h
            self.shared_gate = nn.Linear(d, shared, bias=False)
            self.shared_up = nn.Linear(d, shared, bias=False)
            self.shared_down = nn.Linear(shared, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        weights, experts = route(F.linear(tokens.float(), self.router.float()), self.cfg, self.expert_bias)
        flat = experts.flatten()
        order = flat.argsort(stable=True)  # the routed (token, slot) pairs, grouped by expert
        token_of, expert_of = order // self.cfg.top_k, flat[order]
        counts = torch.bincount(flat, minlength=self.cfg.n_experts)
        row = torch.arange(len(order), device=x.device) - (counts.cumsum(0) - counts)[expert_of]
        # Each expert's tokens in its own row of one padded (experts, most tokens, d) batch: three batched
        # matrix products for all experts, whatever their number.
        grouped = tokens.new_zeros(self.cfg.n_experts, int(counts.max()), shape[-1])
        grouped[expert_of, row] = tokens[token_of]
        hidden = F.silu(torch.bmm(grouped, self.gate.transpose(1, 2))) * torch.bmm(grouped, self.up.transpose(1, 2))
        out = torch.bmm(hidden, self.down.transpose(1, 2))[expert_of, row].float()
        combined = torch.zeros(len(tokens), shape[-1], dtype=torch.float32, device=x.device)
        combined.index_add_(0, token_of, out * weights.flatten()[order, None])
        y = combined.to(x.dtype)
        if self.cfg.shared_experts:
            y = y + swiglu(tokens, self.shared_gate.weight, self.shared_up.weight, self.shared_down.weight)
        return y.view(shape)


class DenseMLP(nn.Module):
    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.dense_hidden, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.dense_hidden, bias=False)
        self.down = nn.Linear(cfg.dense_hidden, cfg.d_model, bias=False)

    def forward(self, x):
        return swiglu(x, self.gate.weight, self.up.weight, self.down.weight)


class Layer(nn.Module):
    def __init__(self, cfg: MoEConfig, dense: bool):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.mlp = DenseMLP(cfg) if dense else Experts(cfg)

    def forward(self, x, cos, sin, mask, cache=None, index=None):
        h = self.attn_norm(x)
        x = x + (self.attn(h, cos, sin, mask) if cache is None else self.attn.forward_cached(h, cos, sin, mask, cache, index))
        return x + self.mlp(self.mlp_norm(x))


class MoELLaDA(nn.Module):
    """Same interface as ``core.llada.model.LLaDA``: ``forward(input_ids, attention_mask)`` gives logits (B, T, V),
    row j the prediction for the token at position j, so LLaDA's samplers run it unchanged."""

    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model, _weight=torch.empty(cfg.vocab_size, cfg.d_model))
        self.layers = nn.ModuleList(Layer(cfg, dense=i < cfg.dense_layers) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def positions_and_mask(self, attention_mask: torch.Tensor | None, B: int, T: int, block_length: int | None = None):
        """Each row's positions (counted from its first real token) and the attention mask (B, 1, T, T) or None:
        padding hidden, and with block-causal attention, later blocks hidden from earlier ones."""
        if attention_mask is None:
            positions = torch.arange(T, device=self.device).expand(B, T)
            real = None
        else:
            real = attention_mask.bool()
            positions = (real.long().cumsum(-1) - 1).clamp(min=0)
        block_length = block_length or self.cfg.block_causal
        if not block_length:
            return positions, None if real is None else real[:, None, None, :]
        return positions, block_causal_mask(positions, positions, real, block_length)

    def rope_tables(self, positions: torch.Tensor):
        d = self.cfg.rotary_dim
        inv_freq = 1.0 / (self.cfg.rope_theta ** (torch.arange(0, d, 2, device=positions.device).float() / d))
        angles = positions.float()[..., None] * inv_freq
        angles = torch.cat([angles, angles], dim=-1)[:, None]
        return angles.cos(), angles.sin()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                block_length: int | None = None) -> torch.Tensor:
        """``block_length`` overrides the config's block-causal block (a sampler's blocks are the attention's)."""
        positions, mask = self.positions_and_mask(attention_mask, *input_ids.shape, block_length)
        cos, sin = self.rope_tables(positions)
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.head(self.norm(x))

    def new_cache(self, B: int, width: int, dtype: torch.dtype | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values of every position of a canvas of ``width``, per layer, filled by ``forward_cached``."""
        shape = (B, self.cfg.n_kv_heads, width, self.cfg.head_dim)
        dtype = dtype or self.embed.weight.dtype
        return [(torch.zeros(shape, dtype=dtype, device=self.device), torch.zeros(shape, dtype=dtype, device=self.device))
                for _ in self.layers]

    def forward_cached(self, input_ids: torch.Tensor, positions: torch.Tensor, index: torch.Tensor,
                       mask: torch.Tensor, cache: list, logits_from: int = 0) -> torch.Tensor:
        """Logits of canvas positions ``index`` (B, T) holding ``input_ids`` at ``positions`` (each row's own),
        attending over the canvas through ``cache`` (keys and values of the other positions, from earlier
        calls) under ``mask`` (B, 1, T, W); the head runs on the positions from ``logits_from`` on."""
        cos, sin = self.rope_tables(positions)
        x = self.embed(input_ids)
        for layer, kv in zip(self.layers, cache):
            x = layer(x, cos, sin, mask, kv, index)
        return self.head(self.norm(x[:, logits_from:]))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
