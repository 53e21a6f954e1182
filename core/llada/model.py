"""LLaDA: a Llama-shaped transformer without a causal mask, in one file.

Parameter names follow the hub checkpoints (``model.transformer.blocks.{i}.q_proj.weight``...),
so a checkpoint's state dict loads with no renaming. Numerics follow the reference code:
RMSNorm in fp32, cast back, then times the weight; RoPE in fp32 with the half-split
rotation; SwiGLU with SiLU on ``ff_proj`` and a linear ``up_proj``; no biases but, with
``qkv_bias`` (Dream's Qwen2 layout), on the query, key and value projections. With
``shifted_prediction`` (models converted from an autoregressive parent, as Dream is) the logits
for position j are read from position j - 1's state. Other families' checkpoints load into this
class under the names core.llada.families maps them to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class LLaDAConfig:
    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int = 32
    n_layers: int = 32
    mlp_hidden_size: int = 12288
    vocab_size: int = 126464
    embedding_size: int = 126464
    max_sequence_length: int = 4096
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    weight_tying: bool = False
    mask_token_id: int = 126336
    eos_token_id: int = 126081
    pad_token_id: int = 126081
    eot_token_id: int | None = None  # the end-of-turn token, where it differs from EOS
    # Dream's shifted prediction: the state at position i predicts token i + 1, as in the AR model
    # a checkpoint was converted from; forward() still returns row j as the prediction for token j.
    shifted_prediction: bool = False
    qkv_bias: bool = False  # biases on q_proj, k_proj and v_proj (Qwen2's layout, so Dream's)

    @classmethod
    def from_dict(cls, raw: dict) -> "LLaDAConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known and v is not None}
        if raw.get("n_kv_heads") is None:
            values["n_kv_heads"] = values.get("n_heads", cls.n_heads)
        if raw.get("embedding_size") is None:
            values["embedding_size"] = values.get("vocab_size", cls.vocab_size)
        return cls(**values)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float):
    """cos/sin of shape (B, 1, T, head_dim) in fp32 for integer positions (B, T)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)


class LayerCache(NamedTuple):
    """One layer's keys (after RoPE) and values for the whole canvas, (B, n_kv_heads, T, head_dim), and
    the positions a forward pass over a slice of the canvas computes."""

    k: torch.Tensor
    v: torch.Tensor
    index: torch.Tensor


class Block(nn.Module):
    def __init__(self, cfg: LLaDAConfig):
        super().__init__()
        self.cfg = cfg
        kv_dim = cfg.n_kv_heads * cfg.head_dim
        self.attn_norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, kv_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, kv_dim, bias=cfg.qkv_bias)
        self.attn_out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.ff_norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.ff_proj = nn.Linear(cfg.d_model, cfg.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(cfg.mlp_hidden_size, cfg.d_model, bias=False)

    def attention(self, x, cos, sin, key_mask, cache: LayerCache | None = None):
        B, T, _ = x.shape
        hd, nh, nkv = self.cfg.head_dim, self.cfg.n_heads, self.cfg.n_kv_heads
        q = self.q_proj(x).view(B, T, nh, hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, nkv, hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, nkv, hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # x holds the positions cache.index: refresh them, then attend to every cached one
            cache.k.index_copy_(2, cache.index, k)
            cache.v.index_copy_(2, cache.index, v)
            k, v = cache.k, cache.v
        if nkv != nh:
            k = k.repeat_interleave(nh // nkv, dim=1)
            v = v.repeat_interleave(nh // nkv, dim=1)
        # Bidirectional: no causal mask, only padded keys are hidden.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=False)
        return self.attn_out(y.transpose(1, 2).reshape(B, T, -1))

    def forward(self, x, cos, sin, key_mask, cache: LayerCache | None = None):
        x = x + self.attention(self.attn_norm(x), cos, sin, key_mask, cache)
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class LLaDA(nn.Module):
    def __init__(self, cfg: LLaDAConfig):
        super().__init__()
        self.cfg = cfg
        # Left uninitialised (a checkpoint or init_weights fills it): nn.Embedding's own normal_ on the
        # meta device pulls in torch's compiler stack, seconds of imports before a model can load.
        transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.embedding_size, cfg.d_model, _weight=torch.empty(cfg.embedding_size, cfg.d_model)),
            blocks=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers)),
            ln_f=RMSNorm(cfg.d_model, cfg.rms_norm_eps),
        ))
        if not cfg.weight_tying:
            transformer["ff_out"] = nn.Linear(cfg.d_model, cfg.embedding_size, bias=False)
        self.model = nn.Module()
        self.model.transformer = transformer

    @property
    def device(self) -> torch.device:
        return self.model.transformer.wte.weight.device

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final normalised hidden states (B, T, d_model).

        ``attention_mask`` (B, T) marks real tokens with 1 and left padding with 0; positions
        count from each row's first real token, so a padded row computes what it would alone.
        """
        t = self.model.transformer
        cos, sin, key_mask = self.rope_inputs(attention_mask, *input_ids.shape)
        x = t.wte(input_ids)
        for block in t.blocks:
            x = block(x, cos, sin, key_mask)
        return t.ln_f(x)

    def rope_inputs(self, attention_mask: torch.Tensor | None, B: int, T: int):
        """RoPE cos/sin (B, 1, T, head_dim) and the key mask (B, 1, 1, T) or None."""
        if attention_mask is None:
            positions = torch.arange(T, device=self.device).expand(B, T)
            key_mask = None
        else:
            real = attention_mask.bool()
            positions = (real.long().cumsum(-1) - 1).clamp(min=0)
            key_mask = real[:, None, None, :]
        return (*rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta), key_mask)

    def lm_head(self, h: torch.Tensor) -> torch.Tensor:
        t = self.model.transformer
        weight = t.wte.weight if self.cfg.weight_tying else t.ff_out.weight
        return F.linear(h, weight)

    def predicting_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """The positions whose states give the logits for ``positions``: the same ones, or with
        shifted prediction each one's predecessor (position 0, which has none, reads itself)."""
        return (positions - 1).clamp(min=0) if self.cfg.shifted_prediction else positions

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, embedding_size): row j is the prediction for the token at position j."""
        h = self.hidden_states(input_ids, attention_mask)
        if self.cfg.shifted_prediction:
            h = h.index_select(1, self.predicting_positions(torch.arange(h.shape[1], device=h.device)))
        return self.lm_head(h)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def init_weights(model: LLaDA, seed: int, std: float = 0.02) -> None:
    """Seeded normal init for models built without a checkpoint (tests, demo, benchmarks)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
            nn.init.ones_(p)
        else:
            with torch.no_grad():
                residual_out = ".blocks." in name and name.endswith(("attn_out.weight", "ff_out.weight"))
                scale = std / math.sqrt(2 * model.cfg.n_layers) if residual_out else std
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
