"""Tiny checkpoints of the Dream and iLLaDA families with their real config fields, tensor names and special tokens,
built by the tests (no hub here). LLaDA's own tiny checkpoint is core.generation.demo.build_tiny_checkpoint."""

import json
from pathlib import Path

from safetensors.torch import save_file

from core.generation.demo import training_texts
from core.llada import families
from core.llada.model import LLaDA, init_weights

# Dream's template as its tokenizer_config.json carries it (Qwen2.5: a default system turn).
QWEN_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
ILLADA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tokenizer(special: list[str], template: str, **named):
    """A byte-level BPE tokenizer whose special tokens take ids 0.. in the order given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **named)
    fast.chat_template = template
    return fast


def write(out_dir: Path, raw: dict, family: families.Family, tok, seed: int) -> Path:
    """config.json as the family ships it, the tensors under the family's names, and the tokenizer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = LLaDA(families.llada_config(raw, family))
    init_weights(model, seed)
    names = families.checkpoint_names(model.state_dict(), family)
    save_file({names[k]: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(raw, indent=2))
    tok.save_pretrained(str(out_dir))
    return out_dir


def dream_checkpoint(out_dir: Path, seed: int = 0, **changes) -> Path:
    tok = tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"], QWEN_TEMPLATE,
                    bos_token="<|beginoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                    mask_token="<|mask|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    vocab = tok.get_vocab()
    raw = {"architectures": ["DreamModel"], "model_type": "Dream",
           "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
           "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": len(tok) + 8,  # Dream's embedding has rows past the tokenizer's
           "rope_theta": 1000000.0, "rope_scaling": None, "rms_norm_eps": 1e-06, "max_position_embeddings": 131072,
           "tie_word_embeddings": False, "hidden_act": "silu", "mask_token_id": vocab["<|mask|>"],
           "bos_token_id": vocab["<|endoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
           "pad_token_id": vocab["<|endoftext|>"], "torch_dtype": "bfloat16", "use_sliding_window": False,
           "sliding_window": None, "attention_dropout": 0.0} | changes
    return write(out_dir, raw, families.DREAM, tok, seed)


def illada_checkpoint(out_dir: Path, seed: int = 0, **changes) -> Path:
    # Ids as the family's tokenizer has them: bos 0, pad 1, eos 2, mask 5.
    tok = tokenizer(["<s>", "<pad>", "</s>", "<unk>", "<|im_start|>", "<[MASK]>", "<|im_end|>"], ILLADA_TEMPLATE,
                    bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                    additional_special_tokens=["<|im_start|>", "<|im_end|>", "<[MASK]>"])
    raw = {"architectures": ["ILLaDAForCausalLM"], "model_type": "illada", "hidden_size": 64,
           "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "vocab_size": len(tok), "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "max_position_embeddings": 8192,
           "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False, "hidden_act": "silu",
           "mask_token_id": 5, "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2} | changes
    return write(out_dir, raw, families.ILLADA, tok, seed)


# LLaDA-MoE's template as dInfer builds its prompts (Ling style).
LING_TEMPLATE = (
    "<role>SYSTEM</role>detailed thinking off<|role_end|>{% for message in messages %}"
    "<role>{{ 'HUMAN' if message['role'] == 'user' else message['role'] | upper }}</role>{{ message['content'] }}"
    "<|role_end|>{% endfor %}{% if add_generation_prompt %}<role>ASSISTANT</role>{% endif %}")


def ling_tokenizer():
    return tokenizer(["<|startoftext|>", "<|endoftext|>", "<|mask|>", "<|role_end|>"], LING_TEMPLATE,
                     bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                     mask_token="<|mask|>", additional_special_tokens=["<|role_end|>"])


def write_mixture(out_dir: Path, raw: dict, family: families.Family, tok, seed: int) -> Path:
    """The mixture-of-experts model's tensors, seeded, under the family's names and in its layout (q/k/v apart or
    fused, one tensor per expert matrix, the router's bias in float32)."""
    import torch

    from core.llada.moe import MoELLaDA

    model = MoELLaDA(families.mixture_config(raw, family))
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        value = (torch.ones(tensor.shape) if name.endswith("norm.weight")
                 else torch.randn(tensor.shape, generator=generator) * (0.05 if name.endswith("expert_bias") else 0.2))
        how, names = families.mixture_sources([name], model.cfg.n_experts, family.name)[name]
        pieces = [value] if how == "one" else value.unbind(0) if how == "stack" else value.split(
            [model.cfg.n_heads * model.cfg.head_dim] + [model.cfg.n_kv_heads * model.cfg.head_dim] * 2)
        state.update({stored: piece.contiguous() for stored, piece in zip(names, pieces)})
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(raw, indent=2))
    tok.save_pretrained(str(out_dir))
    return out_dir


def llada_moe_checkpoint(out_dir: Path, seed: int = 0, **changes) -> Path:
    """LLaDA-MoE's layout at a tiny shape: separate q/k/v/o with per-head q/k norms, a softmax router and one tensor
    per expert matrix."""
    tok = ling_tokenizer()
    vocab = tok.get_vocab()
    raw = {"architectures": ["LLaDAMoEModelLM"], "model_type": "llada", "hidden_size": 32, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": len(tok), "num_experts": 8,
           "num_experts_per_tok": 2, "expert_intermediate_size": 16, "dense_intermediate_size": 64,
           "moe_layer_freq": [1, 1], "shared_expert_intermediate_size": None, "rope_theta": 50000.0,
           "rms_norm_eps": 1e-5, "max_position_embeddings": 8192, "partial_rotary_factor": 1, "qk_layernorm": True,
           "attention_bias": False, "tie_word_embeddings": False, "norm_topk_prob": False,
           "moe_router_enable_expert_bias": False, "eos_token_id": vocab["<|endoftext|>"],
           "pad_token_id": vocab["<|endoftext|>"]} | changes
    return write_mixture(out_dir, raw, families.LLADA_MOE, tok, seed)


def llada2_checkpoint(out_dir: Path, seed: int = 0, **changes) -> Path:
    """LLaDA2.1-mini's config fields and layout at a tiny shape: fused query_key_value, query/key layernorms, a dense
    first layer, a grouped sigmoid router with its expert bias, a shared expert."""
    tok = ling_tokenizer()
    vocab = tok.get_vocab()
    raw = {"architectures": ["LLaDA2MoeModelLM"], "model_type": "llada2_moe",
           "auto_map": {"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
                        "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"},
           "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
           "head_dim": 8, "intermediate_size": 48, "moe_intermediate_size": 16, "num_experts": 8,
           "num_experts_per_tok": 2, "num_shared_experts": 1, "n_group": 4, "topk_group": 2,
           "routed_scaling_factor": 2.5, "first_k_dense_replace": 1, "partial_rotary_factor": 0.5, "rotary_dim": 4,
           "rope_theta": 600000, "rope_scaling": None, "rms_norm_eps": 1e-6, "max_position_embeddings": 32768,
           "moe_router_enable_expert_bias": True, "norm_topk_prob": True, "score_function": "sigmoid",
           "router_dtype": "fp32", "hidden_act": "silu", "use_bias": False, "use_qkv_bias": False,
           "tie_word_embeddings": False, "vocab_size": len(tok), "pad_token_id": vocab["<|endoftext|>"],
           "use_cache": False} | changes
    return write_mixture(out_dir, raw, families.LLADA2, tok, seed)
