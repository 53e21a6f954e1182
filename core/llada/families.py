"""The dense diffusion LM families CompressLens runs, told apart by a checkpoint's config.json.

All of them are bidirectional Llama-shaped transformers, so all run in ``core.llada.model.LLaDA``:
each family here says how its config fields and tensor names map onto that one model, which
special tokens it uses, which sampler it was published with and which fast modes apply.

- LLaDA (LLaDA-8B-Instruct, LLaDA-1.5, dParallel-LLaDA): LLaDA's own key names and config fields.
- iLLaDA (iLLaDA-8B-Instruct): Llama key names, grouped-query attention, a tied head, mask id 5.
- Dream (Dream-v0-Instruct-7B): Qwen2 key names with q/k/v biases, shifted prediction (the state at
  position i predicts token i + 1), its own chat template and its own sampler (core.llada.dream).
- LLaDA-MoE (LLaDA-MoE-7B-A1B): the mixture-of-experts LLaDA, in its own model class (core.llada.moe).
- LLaDA 2.x (LLaDA2.0-mini, LLaDA2.1-mini): the block-diffusion mixture-of-experts LLaDA, in the same class
  with block-causal attention, decoded by its own sampler (core.llada.block_diffusion).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.errors import UserError
from core.llada.model import LLaDAConfig
from core.llada.moe import MoEConfig
from core.llada.tokenizer import EOS, EOT, MASK


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    about: str
    checkpoints: tuple[str, ...]  # hub ids of the family's published checkpoints
    context: str
    presets: tuple[str, ...]  # sampler presets that match its papers, the first the default
    modes: tuple[str, ...]  # the sampler modes it decodes with (core.llada.sampler.MODES)
    decodes_with: str  # the same, in words, for the message that refuses another
    # Token strings looked up in the tokenizer first; the config's ids where a name is absent.
    token_names: dict[str, str] = field(default_factory=dict)
    architecture: str = "dense"  # "dense": core.llada.model; "moe": core.llada.moe
    no_fast: str = ""  # why LLaDA's fast modes do not apply, where they do not

    @property
    def fast_modes(self) -> dict[str, str]:
        """Each fast mode of the LLaDA sampler, and whether it applies to this family, in words."""
        verdict = "applies" if "fast" in self.modes else f"does not apply: {self.no_fast}"
        return {mode: verdict for mode in ("exact fast loop", "prefix cache", "dual cache", "threshold",
                                           "entropy threshold (dParallel)", "EOS early stop", "window")}


LLADA = Family(
    "llada", "LLaDA", "GSAI-ML's masked diffusion LM trained from scratch (8B, Llama-shaped, bidirectional). "
    "LLaDA-1.5 is the same model after variance-reduced preference optimisation; dParallel-LLaDA is it "
    "distilled to commit many tokens per step (certainty-forcing), decoded with an entropy threshold.",
    ("GSAI-ML/LLaDA-8B-Instruct", "GSAI-ML/LLaDA-1.5", "Zigeng/dParallel-LLaDA-8B-instruct"),
    "4,096 tokens (prompt and answer)", ("demo", "gsm8k", "llada15-gsm8k", "dparallel", "pure", "gsm8k-fast"),
    ("reference", "fast"), "LLaDA's sampler (mode reference or fast), not Dream's", {"mask": MASK, "eos": EOS,
                                                                                     "eot": EOT})
ILLADA = Family(
    "illada", "iLLaDA", "GSAI-ML's second-generation LLaDA (8B, trained from scratch on 12T tokens, fully "
    "bidirectional): Llama key names, grouped-query attention, a tied output head, mask token id 5. "
    "It decodes with LLaDA's sampler.",
    ("GSAI-ML/iLLaDA-8B-Instruct",), "8,192 tokens", ("illada-gsm8k", "gsm8k", "gsm8k-fast"), ("reference", "fast"),
    "LLaDA's sampler (mode reference or fast), not Dream's")
DREAM = Family(
    "dream", "Dream", "HKU NLP's Dream-v0 (7B), initialised from Qwen2.5-7B and trained as a masked diffusion "
    "LM with shifted prediction: the state at position i predicts token i + 1. It decodes with its own sampler: "
    "timesteps from 1 to eps, a share of the masks unmasked per step, by one of four orderings.",
    ("Dream-org/Dream-v0-Instruct-7B",), "2,048 tokens (prompt and answer, as its authors say)",
    ("dream-gsm8k", "dream-demo", "dream-greedy"), ("dream",), "its own sampler: a dream-* preset (mode 'dream')",
    {"mask": "<|mask|>", "eos": "<|endoftext|>", "eot": "<|im_end|>"},
    no_fast="Dream decodes with its own sampler (no blocks, so no block caches)")
LLADA_MOE = Family(
    "llada-moe", "LLaDA-MoE", "inclusionAI's mixture-of-experts LLaDA (7B in all, 1.4B active: 16 layers of 64 "
    "experts, 8 for each token, chosen by a softmax router), trained from scratch on 20T tokens; per-head "
    "query/key RMSNorm, fully bidirectional. It decodes with LLaDA's reference sampler.",
    ("inclusionAI/LLaDA-MoE-7B-A1B-Instruct",), "8,192 tokens", ("llada-moe",), ("reference",),
    "LLaDA's reference sampler (mode reference)", {"mask": "<|mask|>", "eos": "<|endoftext|>", "eot": "<|role_end|>"},
    architecture="moe", no_fast="the fast loop is written for the dense model's layers")
LLADA2 = Family(
    "llada2", "LLaDA 2.x", "inclusionAI's block-diffusion mixture-of-experts LLaDA (16B in all, 1.4B active: 20 "
    "layers, the first dense, then 256 experts, 8 for each token by a sigmoid router limited to 4 of 8 groups, and "
    "a shared expert), converted from the autoregressive Ling-mini-2.0. Attention is block-causal: bidirectional "
    "inside a block of 32, causal across blocks, so finished blocks' keys and values can be kept exactly. It "
    "decodes with its own block sampler (threshold with a top-k fallback); LLaDA2.1 also edits tokens it has "
    "committed.", ("inclusionAI/LLaDA2.0-mini", "inclusionAI/LLaDA2.1-mini"), "32,768 tokens",
    ("llada2", "llada21-quality", "llada21-speed"), ("block",), "its own block sampler: an llada2* preset (mode "
    "'block')", {"mask": "<|mask|>", "eos": "<|endoftext|>", "eot": "<|role_end|>"}, architecture="moe",
    no_fast="LLaDA 2.x decodes with its own block sampler, which has its own threshold, EOS early stop and an "
    "exact block cache")
FAMILIES = {f.name: f for f in (LLADA, ILLADA, DREAM, LLADA_MOE, LLADA2)}
BY_CHECKPOINT = {hub_id: family for family in FAMILIES.values() for hub_id in family.checkpoints}
# Checkpoints whose papers decode them otherwise than their family's first preset.
CHECKPOINT_PRESETS = {"GSAI-ML/LLaDA-1.5": "llada15-gsm8k", "Zigeng/dParallel-LLaDA-8B-instruct": "dparallel",
                      "inclusionAI/LLaDA2.1-mini": "llada21-quality"}

# Diffusion LMs whose configs we recognise but do not run (yet), and what to say about them.
UNSUPPORTED = {"mmada": "MMaDA (a multimodal diffusion model)"}
SUPPORTED_TEXT = ("CompressLens runs the diffusion families LLaDA (LLaDA-8B-Instruct, LLaDA-1.5, dParallel-LLaDA), "
                  "iLLaDA (iLLaDA-8B-Instruct), Dream (Dream-v0-Instruct-7B), LLaDA-MoE (LLaDA-MoE-7B-A1B) and LLaDA 2.x "
                  "(LLaDA2.0-mini, LLaDA2.1-mini), "
                  "and any causal LM as the autoregressive control")

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


def is_llada_moe(raw: dict) -> bool:
    """LLaDA-MoE says model_type "llada" like the dense model; its architecture and experts give it away."""
    architectures = " ".join(_architectures(raw)).lower()
    if "llada2" in architectures:
        return False
    return ("llada" in architectures and "moe" in architectures) or (
        str(raw.get("model_type", "")).lower() in ("llada", "lladamoe")
        and any(k in raw for k in ("num_experts", "moe_layer_freq", "expert_intermediate_size")))


def unsupported_family(raw: dict) -> str | None:
    """The name of a diffusion family we recognise and do not run, or None."""
    model_type = str(raw.get("model_type", "")).lower()
    architectures = " ".join(_architectures(raw)).lower()
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
    if is_llada_moe(raw):
        return LLADA_MOE
    if model_type.startswith("llada2") or any(a.startswith("LLaDA2") for a in architectures):
        return LLADA2
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


def moe_config(raw: dict, family: Family) -> MoEConfig:
    """The mixture-of-experts model's config from LLaDA-MoE's config.json fields; what the class does not
    implement (a dense layer, shared experts, an expert bias, clipped q/k/v) is refused with a message."""
    _need(raw, ("hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size", "num_experts",
                "num_experts_per_tok", "expert_intermediate_size"), family)
    if raw.get("shared_expert_intermediate_size") or raw.get("moe_router_enable_expert_bias") \
            or raw.get("clip_qkv") is not None or raw.get("qk_layernorm") is False \
            or any(not flag for flag in raw.get("moe_layer_freq") or []):
        raise UserError(f"This {family.title} config asks for a layer this model class does not have (a dense layer, "
                        "a shared expert, an expert bias, clipped q/k/v or no q/k norm); a newer release?")
    heads = raw["num_attention_heads"]
    head_dim = raw["hidden_size"] // heads
    partial = raw.get("partial_rotary_factor")
    return MoEConfig.from_dict(dict(
        d_model=raw["hidden_size"], n_heads=heads, n_kv_heads=raw.get("num_key_value_heads") or heads,
        head_dim=head_dim, n_layers=raw["num_hidden_layers"], vocab_size=raw["vocab_size"],
        max_sequence_length=raw.get("max_position_embeddings", 8192), rope_theta=raw.get("rope_theta", 50000.0),
        rotary_dim=int(head_dim * partial) if partial and partial > 0 else head_dim,
        rms_norm_eps=raw.get("rms_norm_eps", 1e-5), n_experts=raw["num_experts"], top_k=raw["num_experts_per_tok"],
        expert_hidden=raw["expert_intermediate_size"], router="softmax",
        eos_token_id=_first(raw.get("eos_token_id")), pad_token_id=_first(raw.get("pad_token_id"))))


def llada2_config(raw: dict, family: Family) -> MoEConfig:
    """The mixture-of-experts model's config from LLaDA 2.x's config.json fields (blocks of 32, as its authors
    train and decode it); what the class does not implement is refused with a message."""
    _need(raw, ("hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size", "num_experts",
                "num_experts_per_tok", "moe_intermediate_size", "intermediate_size"), family)
    if raw.get("use_qkv_bias") or raw.get("use_bias") or raw.get("tie_word_embeddings") \
            or raw.get("score_function", "sigmoid") != "sigmoid" or raw.get("rope_scaling") \
            or raw.get("use_qk_norm") is False or raw.get("hidden_act", "silu") != "silu":
        raise UserError(f"This {family.title} config asks for what this model class does not have (biases, a tied "
                        "head, a router other than sigmoid, RoPE scaling, no q/k norm); a newer release?")
    heads = raw["num_attention_heads"]
    head_dim = raw.get("head_dim") or raw["hidden_size"] // heads
    return MoEConfig.from_dict(dict(
        d_model=raw["hidden_size"], n_heads=heads, n_kv_heads=raw.get("num_key_value_heads") or heads,
        head_dim=head_dim, n_layers=raw["num_hidden_layers"], vocab_size=raw["vocab_size"],
        max_sequence_length=raw.get("max_position_embeddings", 32768), rope_theta=raw.get("rope_theta", 600000.0),
        rotary_dim=int(head_dim * raw.get("partial_rotary_factor", 1.0)), rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
        dense_layers=raw.get("first_k_dense_replace", 0), dense_hidden=raw["intermediate_size"],
        n_experts=raw["num_experts"], top_k=raw["num_experts_per_tok"], expert_hidden=raw["moe_intermediate_size"],
        shared_experts=raw.get("num_shared_experts", 0), router="sigmoid_grouped", n_group=raw.get("n_group", 1),
        topk_group=raw.get("topk_group", 1), routed_scaling=raw.get("routed_scaling_factor", 1.0), block_causal=32,
        pad_token_id=_first(raw.get("pad_token_id"))))


def mixture_config(raw: dict, family: Family) -> MoEConfig:
    return llada2_config(raw, family) if family is LLADA2 else moe_config(raw, family)


_MOE_LAYER = {"attn_norm.weight": "input_layernorm.weight", "mlp_norm.weight": "post_attention_layernorm.weight",
              "attn.q_norm.weight": "self_attn.q_norm.weight", "attn.k_norm.weight": "self_attn.k_norm.weight",
              "attn.out.weight": "self_attn.o_proj.weight", "mlp.router": "mlp.gate.weight"}
_MOE_EXPERTS = {"mlp.gate": "gate_proj", "mlp.up": "up_proj", "mlp.down": "down_proj"}
_MOE_TOP = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
            "head.weight": "lm_head.weight"}
_LLADA2_LAYER = {"attn_norm.weight": "input_layernorm.weight", "mlp_norm.weight": "post_attention_layernorm.weight",
                 "attn.qkv.weight": "attention.query_key_value.weight",
                 "attn.q_norm.weight": "attention.query_layernorm.weight",
                 "attn.k_norm.weight": "attention.key_layernorm.weight", "attn.out.weight": "attention.dense.weight",
                 "mlp.gate.weight": "mlp.gate_proj.weight", "mlp.up.weight": "mlp.up_proj.weight",
                 "mlp.down.weight": "mlp.down_proj.weight", "mlp.router": "mlp.gate.weight",
                 "mlp.expert_bias": "mlp.gate.expert_bias",
                 "mlp.shared_gate.weight": "mlp.shared_experts.gate_proj.weight",
                 "mlp.shared_up.weight": "mlp.shared_experts.up_proj.weight",
                 "mlp.shared_down.weight": "mlp.shared_experts.down_proj.weight"}
_LLADA2_TOP = {"embed.weight": "model.word_embeddings.weight", "norm.weight": "model.norm.weight",
               "head.weight": "lm_head.weight"}
# Where each family keeps the mixture-of-experts model's tensors: at the top, and per layer.
LAYOUTS = {"llada-moe": (_MOE_TOP, _MOE_LAYER), "llada2": (_LLADA2_TOP, _LLADA2_LAYER)}


def mixture_sources(model_names, n_experts: int, layout: str) -> dict[str, tuple[str, list[str]]]:
    """Each of the mixture-of-experts model's tensors -> how a checkpoint of ``layout`` makes it: ("one", [name]);
    ("cat", names): q, k and v fused along the rows (LLaDA-MoE keeps them apart, LLaDA 2.x fused); ("stack", names): one matrix
    of every expert, in expert order."""
    top, per_layer = LAYOUTS[layout]
    sources = {}
    for name in model_names:
        if name in top:
            sources[name] = ("one", [top[name]])
            continue
        layer, rest = re.fullmatch(r"layers\.(\d+)\.(.+)", name).groups()
        prefix = f"model.layers.{layer}."
        if rest in per_layer:
            sources[name] = ("one", [prefix + per_layer[rest]])
        elif rest == "attn.qkv.weight":
            sources[name] = ("cat", [f"{prefix}self_attn.{p}_proj.weight" for p in "qkv"])
        else:
            sources[name] = ("stack", [f"{prefix}mlp.experts.{e}.{_MOE_EXPERTS[rest]}.weight" for e in range(n_experts)])
    return sources
