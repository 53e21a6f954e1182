"""The dense diffusion LM families CompressLens runs, told apart by a checkpoint's config.json.

All of them are bidirectional Llama-shaped transformers, so all run in ``core.llada.model.LLaDA``:
each family here says how its config fields and tensor names map onto that one model, which
special tokens it uses, which sampler it was published with and which fast modes apply.

- LLaDA (LLaDA-8B-Instruct, LLaDA-1.5, dParallel-LLaDA): LLaDA's own key names and config fields.
- iLLaDA (iLLaDA-8B-Instruct): Llama key names, grouped-query attention, a tied head, mask id 5.
- Dream (Dream-v0-Instruct-7B): Qwen2 key names with q/k/v biases, shifted prediction (the state at
  position i predicts token i + 1), its own chat template and its own sampler (core.llada.dream).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.errors import UserError
from core.llada.model import LLaDAConfig
from core.llada.tokenizer import EOS, EOT, MASK


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    about: str
    checkpoints: tuple[str, ...]  # hub ids of the family's published checkpoints
    context: str
    presets: tuple[str, ...]  # sampler presets that match its papers, the first the default
    sampler: str  # "llada": the block sampler and its fast modes; "dream": Dream's own loop
    # Token strings looked up in the tokenizer first; the config's ids where a name is absent.
    token_names: dict[str, str] = field(default_factory=dict)

    @property
    def fast_modes(self) -> dict[str, str]:
        """Each fast mode of the LLaDA sampler, and whether it applies to this family, in words."""
        if self.sampler == "llada":
            return {mode: "applies" for mode in ("exact fast loop", "prefix cache", "dual cache", "threshold",
                                                 "entropy threshold (dParallel)", "EOS early stop", "window")}
        reason = "does not apply: Dream decodes with its own sampler (no blocks, so no block caches)"
        return {mode: reason for mode in ("exact fast loop", "prefix cache", "dual cache", "threshold",
                                          "entropy threshold (dParallel)", "EOS early stop", "window")}


LLADA = Family(
    "llada", "LLaDA", "GSAI-ML's masked diffusion LM trained from scratch (8B, Llama-shaped, bidirectional). "
    "LLaDA-1.5 is the same model after variance-reduced preference optimisation; dParallel-LLaDA is it "
    "distilled to commit many tokens per step (certainty-forcing), decoded with an entropy threshold.",
    ("GSAI-ML/LLaDA-8B-Instruct", "GSAI-ML/LLaDA-1.5", "Zigeng/dParallel-LLaDA-8B-instruct"),
    "4,096 tokens (prompt and answer)", ("demo", "gsm8k", "llada15-gsm8k", "dparallel", "pure", "gsm8k-fast"),
    "llada", {"mask": MASK, "eos": EOS, "eot": EOT})
ILLADA = Family(
    "illada", "iLLaDA", "GSAI-ML's second-generation LLaDA (8B, trained from scratch on 12T tokens, fully "
    "bidirectional): Llama key names, grouped-query attention, a tied output head, mask token id 5. "
    "It decodes with LLaDA's sampler.",
    ("GSAI-ML/iLLaDA-8B-Instruct",), "8,192 tokens", ("illada-gsm8k", "gsm8k", "gsm8k-fast"), "llada")
DREAM = Family(
    "dream", "Dream", "HKU NLP's Dream-v0 (7B), initialised from Qwen2.5-7B and trained as a masked diffusion "
    "LM with shifted prediction: the state at position i predicts token i + 1. It decodes with its own sampler: "
    "timesteps from 1 to eps, a share of the masks unmasked per step, by one of four orderings.",
    ("Dream-org/Dream-v0-Instruct-7B",), "2,048 tokens (prompt and answer, as its authors say)",
    ("dream-gsm8k", "dream-demo", "dream-greedy"), "dream",
    {"mask": "<|mask|>", "eos": "<|endoftext|>", "eot": "<|im_end|>"})
FAMILIES = {f.name: f for f in (LLADA, ILLADA, DREAM)}
BY_CHECKPOINT = {hub_id: family for family in FAMILIES.values() for hub_id in family.checkpoints}
# Checkpoints whose papers decode them otherwise than their family's first preset.
CHECKPOINT_PRESETS = {"GSAI-ML/LLaDA-1.5": "llada15-gsm8k", "Zigeng/dParallel-LLaDA-8B-instruct": "dparallel"}

# Diffusion LMs whose configs we recognise but do not run (yet), and what to say about them.
UNSUPPORTED = {
    "llada-moe": "LLaDA-MoE (inclusionAI's mixture-of-experts LLaDA)",
    "llada2_moe": "LLaDA 2.x (inclusionAI's block-diffusion mixture-of-experts LLaDA)",
    "mmada": "MMaDA (a multimodal diffusion model)",
}
SUPPORTED_TEXT = ("CompressLens runs the dense diffusion families LLaDA (LLaDA-8B-Instruct, LLaDA-1.5, "
                  "dParallel-LLaDA), iLLaDA (iLLaDA-8B-Instruct) and Dream (Dream-v0-Instruct-7B), and any causal "
                  "LM as the autoregressive control")

# This project's tensor names -> the Llama/Qwen2 checkpoint layout's (iLLaDA, Dream).
_LLAMA_TOP = {"model.transformer.wte.weight": "model.embed_tokens.weight",
              "model.transformer.ln_f.weight": "model.norm.weight",
              "model.transformer.ff_out.weight": "lm_head.weight"}
_LLAMA_BLOCK = {"q_proj.weight": "self_attn.q_proj.weight", "q_proj.bias": "self_attn.q_proj.bias",
                "k_proj.weight": "self_attn.k_proj.weight", "k_proj.bias": "self_attn.k_proj.bias",
                "v_proj.weight": "self_attn.v_proj.weight", "v_proj.bias": "self_attn.v_proj.bias",
                "attn_out.weight": "self_attn.o_proj.weight", "ff_proj.weight": "mlp.gate_proj.weight",
                "up_proj.weight": "mlp.up_proj.weight", "ff_out.weight": "mlp.down_proj.weight",
                "attn_norm.weight": "input_layernorm.weight", "ff_norm.weight": "post_attention_layernorm.weight"}
# A tied head's checkpoint may still carry this copy of the embedding; it is not loaded.
TIED_HEAD_COPY = "lm_head.weight"


def _architectures(raw: dict) -> list[str]:
    return [str(a) for a in raw.get("architectures") or []]


def unsupported_family(raw: dict) -> str | None:
    """The name of a diffusion family we recognise and do not run, or None."""
    model_type = str(raw.get("model_type", "")).lower()
    architectures = " ".join(_architectures(raw)).lower()
    # LLaDA-MoE says model_type "llada" like the dense model; its experts give it away.
    if "moe" in architectures and "llada2" not in architectures and "llada" in (model_type + architectures):
        return UNSUPPORTED["llada-moe"]
    if model_type == "llada" and any(k in raw for k in ("num_experts", "moe_layer_freq", "expert_intermediate_size")):
        return UNSUPPORTED["llada-moe"]
    if model_type == "llada2_moe" or "llada2" in architectures:
        return UNSUPPORTED["llada2_moe"]
    if model_type == "mmada" or "mmada" in architectures:
        return UNSUPPORTED["mmada"]
    return None


def detect(raw: dict) -> Family | None:
    """The diffusion family of a config.json, or None for a model that is none (a causal LM, the AR control).

    A diffusion LM we recognise and do not run is refused with a message naming the families we run."""
    unsupported = unsupported_family(raw)
    if unsupported:
        raise UserError(f"This checkpoint is {unsupported}, which CompressLens does not run. {SUPPORTED_TEXT}.")
    model_type = str(raw.get("model_type", "")).lower()
    architectures = _architectures(raw)
    if model_type == "llada":
        return LLADA
    if model_type == "dream" or "DreamModel" in architectures:
        return DREAM
    if model_type == "illada" or any(a.startswith("ILLaDA") for a in architectures):
        return ILLADA
    return None


def _need(raw: dict, keys: tuple[str, ...], family: Family) -> None:
    missing = [k for k in keys if k not in raw]
    if missing:
        raise UserError(f"This {family.title} config.json lacks {', '.join(missing)}")


def llada_config(raw: dict, family: Family) -> LLaDAConfig:
    """The config of the one model class, from a family's config.json fields."""
    if family is LLADA:
        _need(raw, ("d_model", "n_heads", "n_layers", "mlp_hidden_size", "vocab_size"), family)
        return LLaDAConfig.from_dict(raw)
    _need(raw, ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size"),
          family)
    if raw.get("hidden_act", "silu") != "silu" or raw.get("mlp_bias") or raw.get("layer_norm_eps") is not None:
        raise UserError(f"This {family.title} config asks for a layer this model class does not have "
                        "(an activation other than SiLU, MLP biases or LayerNorm); a newer release of the family?")
    if raw.get("rope_scaling"):
        raise UserError(f"This {family.title} config asks for RoPE scaling ({raw['rope_scaling']}), which this "
                        "model class does not implement")
    heads = raw["num_attention_heads"]
    values = dict(
        d_model=raw["hidden_size"], n_heads=heads, n_kv_heads=raw.get("num_key_value_heads") or heads,
        n_layers=raw["num_hidden_layers"], mlp_hidden_size=raw["intermediate_size"], vocab_size=raw["vocab_size"],
        embedding_size=raw["vocab_size"], rope_theta=raw.get("rope_theta", 10000.0),
        rms_norm_eps=raw.get("rms_norm_eps", 1e-6), weight_tying=bool(raw.get("tie_word_embeddings", False)),
        eos_token_id=_first(raw.get("eos_token_id")), pad_token_id=_first(raw.get("pad_token_id")),
    )
    if family is DREAM:
        values.update(mask_token_id=raw.get("mask_token_id", 151666), qkv_bias=True, shifted_prediction=True,
                      max_sequence_length=2048)
    else:
        values.update(mask_token_id=raw.get("mask_token_id", 5), qkv_bias=bool(raw.get("attention_bias", False)),
                      max_sequence_length=raw.get("max_position_embeddings", 8192))
    return LLaDAConfig.from_dict({k: v for k, v in values.items() if v is not None})


def _first(value):
    return value[0] if isinstance(value, list) and value else value


def checkpoint_names(model_names, family: Family) -> dict[str, str]:
    """Each of this project's tensor names -> the name the family's checkpoints give it."""
    if family is LLADA:
        return {name: name for name in model_names}
    names = {}
    for name in model_names:
        block = re.fullmatch(r"model\.transformer\.blocks\.(\d+)\.(.+)", name)
        names[name] = f"model.layers.{block[1]}.{_LLAMA_BLOCK[block[2]]}" if block else _LLAMA_TOP[name]
    return names
