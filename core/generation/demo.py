"""The demo model shipped in the repository, and tiny LLaDA checkpoints that tests build.

Both are written exactly as hub checkpoints are (config.json, safetensors, tokenizer files) and
loaded by the same loader as LLaDA-8B; only the configuration is small. The demo model is
trained by scripts/train_demo_model.py on problems from core.data.mathgen.
"""

from __future__ import annotations

from pathlib import Path

from core.llada.loader import save_llada
from core.llada.model import LLaDA, LLaDAConfig, init_weights
from core.llada.tokenizer import EOS, MASK, build_bpe_tokenizer

DEMO_ID = "compresslens/math-demo"
DEMO_DIR = Path(__file__).resolve().parents[2] / "models" / "compresslens-math-demo"
DEMO_PRESET = "small"
FULL_SIZE_PARAMETERS = 8_020_000_000


def training_texts() -> list[str]:
    """Text the demo tokenizer's merges are learned from: the app's own sample prompts."""
    from core.data.datasets import builtin_samples

    texts = []
    for sample in builtin_samples():
        texts += [sample.prompt, sample.gold_solution or "", sample.reference or ""]
    return [t for t in texts if t]


def build_tiny_checkpoint(out_dir: Path, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                          n_kv_heads: int | None = None, mlp_hidden_size: int = 128, weight_tying: bool = False,
                          vocab_size: int = 512, max_sequence_length: int = 1024, seed: int = 0,
                          max_shard_bytes: int | None = None, chat_template: bool = True,
                          shifted_prediction: bool = False) -> Path:
    out_dir = Path(out_dir)
    tokenizer = build_bpe_tokenizer(training_texts(), vocab_size=vocab_size, with_chat_template=chat_template)
    vocab = tokenizer.get_vocab()
    cfg = LLaDAConfig(
        d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads or n_heads, n_layers=n_layers,
        mlp_hidden_size=mlp_hidden_size, vocab_size=len(tokenizer), embedding_size=len(tokenizer),
        max_sequence_length=max_sequence_length, rope_theta=10000.0, weight_tying=weight_tying,
        mask_token_id=vocab[MASK], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS],
        shifted_prediction=shifted_prediction,
    )
    model = LLaDA(cfg)
    init_weights(model, seed)
    save_llada(model, out_dir, max_shard_bytes=max_shard_bytes)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def is_demo(model_id: str) -> bool:
    return model_id == DEMO_ID or Path(model_id).expanduser().resolve() == DEMO_DIR


def resolve(model_id: str) -> str:
    """The demo model's id becomes its directory in the repository; any other id passes through."""
    return str(DEMO_DIR) if is_demo(model_id) else model_id


def parameter_count(model_dir: Path = DEMO_DIR) -> int:
    """Parameters of a checkpoint from its config alone (the model is built on the meta device)."""
    import torch

    from core.llada.loader import read_config

    with torch.device("meta"):
        return LLaDA(read_config(Path(model_dir))).num_parameters()


def demo_note(parameters: int) -> str:
    return (f"Demo model: a small LLaDA trained by CompressLens on generated math word problems "
            f"({parameters:,} parameters, 1 of {round(FULL_SIZE_PARAMETERS / parameters):,} of LLaDA-8B). "
            "It solves GSM8K-style arithmetic problems and nothing else; set COMPRESSLENS_MODEL or use "
            "LLaDA-8B on a GPU for general prompts.")
