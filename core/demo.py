"""Tiny LLaDA checkpoints built locally: the offline demo model and the models tests load.

They are written exactly as hub checkpoints are (config.json, safetensors shards with an index,
tokenizer files) and loaded by the same loader as LLaDA-8B; only the configuration is small.
"""

from __future__ import annotations

from pathlib import Path

from core import paths
from core.llada.loader import save_llada
from core.llada.model import LLaDA, LLaDAConfig, init_weights
from core.llada.tokenizer import EOS, MASK, build_bpe_tokenizer

DEMO_ID = "demo:random-llada"
DEMO_VERSION = 1
FULL_SIZE_PARAMETERS = 8_020_000_000
DEMO_NOTE = ("Demo model: a tiny LLaDA with random weights ({params:,} parameters, 1 of {ratio:,} of LLaDA-8B). "
             "Its output is meaningless; set COMPRESSLENS_MODEL or pick LLaDA-8B on a GPU for real results.")


def training_texts() -> list[str]:
    """Text the demo tokenizer's merges are learned from: the app's own sample prompts."""
    from core.datasets import builtin_samples

    texts = []
    for sample in builtin_samples():
        texts += [sample.prompt, sample.gold_solution or "", sample.reference or ""]
    return [t for t in texts if t]


def build_tiny_checkpoint(out_dir: Path, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                          n_kv_heads: int | None = None, mlp_hidden_size: int = 128, weight_tying: bool = False,
                          vocab_size: int = 512, max_sequence_length: int = 1024, seed: int = 0,
                          max_shard_bytes: int | None = None, chat_template: bool = True) -> Path:
    out_dir = Path(out_dir)
    tokenizer = build_bpe_tokenizer(training_texts(), vocab_size=vocab_size, with_chat_template=chat_template)
    vocab = tokenizer.get_vocab()
    cfg = LLaDAConfig(
        d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads or n_heads, n_layers=n_layers,
        mlp_hidden_size=mlp_hidden_size, vocab_size=len(tokenizer), embedding_size=len(tokenizer),
        max_sequence_length=max_sequence_length, rope_theta=10000.0, weight_tying=weight_tying,
        mask_token_id=vocab[MASK], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS],
    )
    model = LLaDA(cfg)
    init_weights(model, seed)
    save_llada(model, out_dir, max_shard_bytes=max_shard_bytes)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def is_demo(model_id: str) -> bool:
    return model_id == DEMO_ID


def demo_dir() -> Path:
    return paths.home() / "models" / f"demo-random-llada-v{DEMO_VERSION}"


def resolve(model_id: str) -> str:
    """The demo id becomes its local directory (built on first use); any other id passes through."""
    if not is_demo(model_id):
        return model_id
    out = demo_dir()
    if not (out / "config.json").is_file():
        tmp = out.with_name(out.name + ".building")
        build_tiny_checkpoint(tmp, d_model=128, n_layers=4, n_heads=4, mlp_hidden_size=384, vocab_size=2048,
                              max_sequence_length=4096, max_shard_bytes=2_000_000)
        tmp.replace(out)
    return str(out)


def demo_note(parameters: int) -> str:
    return DEMO_NOTE.format(params=parameters, ratio=round(FULL_SIZE_PARAMETERS / parameters))
