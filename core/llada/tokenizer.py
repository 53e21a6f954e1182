"""LLaDA's special tokens, its chat template, and a small tokenizer builder for local models."""

from __future__ import annotations

from typing import Iterable

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MASK = "<|mdm_mask|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
SPECIAL_TOKENS = [BOS, EOS, MASK, START_HEADER, END_HEADER, EOT]

# The Instruct checkpoint's template (Llama-3 style; content trimmed, BOS before the first turn).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def fallback_chat_prompt(content: str) -> str:
    """The text CHAT_TEMPLATE renders for one user message, for tokenizers that carry no template."""
    return f"{BOS}{START_HEADER}user{END_HEADER}\n\n{content.strip()}{EOT}{START_HEADER}assistant{END_HEADER}\n\n"


def chat_prompt(tokenizer, content: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                             add_generation_prompt=True, tokenize=False)
    return fallback_chat_prompt(content)


def build_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2048, with_chat_template: bool = True,
                        split_digits: bool = False):
    """A byte-level BPE tokenizer trained on ``texts`` that carries LLaDA's special tokens.

    Byte-level, so any text round-trips; deterministic for the same texts. ``split_digits``
    makes every digit its own token, so a number is spelled the same way wherever it occurs.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                   mask_token=MASK, additional_special_tokens=[START_HEADER, END_HEADER, EOT])
    if with_chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast
