"""Compressors that ask a model: dllm_confidence (the target diffusion model) and self_information (the AR control)."""

import pytest
import torch

from core.errors import UserError
from core.generation.ar import PACKAGED_SMOLLM2
from core.pipeline.compressors import REGISTRY, get_compressor

TEXT = ("A baker made 48 muffins in the morning and 36 more in the afternoon. She sold 52 of them at the market "
        "and gave 9 to her neighbours. How many muffins does she have left at the end of the day?")


@pytest.fixture(scope="module")
def pool(model_pool):
    return model_pool


def test_recoverability_restated_from_the_model(pool, tiny_checkpoint):
    generator = pool.generator(str(tiny_checkpoint))
    words = TEXT.split()[:9]
    scores, passes = generator.recoverability(words, copies=3, batch=2)
    assert passes == 2  # 3 copies, 2 at a time
    ids, owner = generator.word_tokens(words)
    for j, word in enumerate(words):
        # Copy j % 3 masks word j and every third word beside it; the score is the mean log-probability of its tokens.
        x = torch.tensor([[generator.mask_id if o >= 0 and o % 3 == j % 3 else t for t, o in zip(ids, owner)]])
        logp = torch.log_softmax(generator.model(x)[0].float(), dim=-1)
        expected = torch.stack([logp[i, ids[i]] for i, o in enumerate(owner) if o == j]).mean().item()
        assert scores[j] == pytest.approx(expected, abs=1e-4)


def test_dllm_confidence_hits_the_ratio_keeps_numbers_and_counts_its_passes(pool, tiny_checkpoint):
    generator = pool.generator(str(tiny_checkpoint))
    calls = []
    forward = generator.model.forward
    generator.model.forward = lambda *a, **k: (calls.append(1), forward(*a, **k))[1]
    try:
        compressor = pool.compressor("dllm_confidence", {"force_reserve_digit": True, "copies": 12},
                                     str(tiny_checkpoint))
        cut = compressor.compress(TEXT, 2.0, generator.count_tokens)
    finally:
        generator.model.forward = forward
    assert abs(cut.achieved_ratio - 2.0) / 2.0 <= 0.10
    assert all(w.kept for w in cut.words if any(ch.isdigit() for ch in w.text))
    assert cut.forward_passes == len(calls) == 2  # 12 copies, 8 a batch
    # The dropped words are the ones the model restores most surely.
    scores, _ = generator.recoverability([w.text for w in cut.words], 12)
    droppable = [(s, w.kept) for s, w in zip(scores, cut.words) if not any(ch.isdigit() for ch in w.text)]
    assert min(s for s, kept in droppable if not kept) >= max(s for s, kept in droppable if kept)


def test_self_information_drops_the_least_surprising_words_of_the_control(pool):
    control = pool.generator(PACKAGED_SMOLLM2)
    words = TEXT.split()
    surprisal, passes = control.surprisal(words)
    assert passes == 1
    # Restated: -log p of each token given the text before it (after BOS), summed per word.
    ids = control.tokenizer(TEXT, add_special_tokens=False).input_ids
    x = torch.tensor([[control.tokenizer.bos_token_id or control.tokenizer.eos_token_id] + ids])
    logp = torch.log_softmax(control.model(x).logits[0, :-1].float(), dim=-1)
    assert sum(surprisal) == pytest.approx(-logp.gather(-1, x[0, 1:, None]).sum().item(), rel=1e-3)
    cut = pool.compressor("self_information", {}, "ignored-target").compress(TEXT, 1.5, control.count_tokens)
    assert cut.forward_passes == 1 and abs(cut.achieved_ratio - 1.5) / 1.5 <= 0.10
    kept = [s for s, w in zip(surprisal, cut.words) if w.kept]
    dropped = [s for s, w in zip(surprisal, cut.words) if not w.kept]
    assert max(dropped) <= min(kept)


def test_each_family_asks_its_own_kind_of_model(pool, tiny_checkpoint):
    assert {"dllm_confidence", "self_information"} <= set(REGISTRY)
    with pytest.raises(UserError, match="needs a model"):
        get_compressor("dllm_confidence").compress(TEXT, 2.0, len)
    with pytest.raises(UserError, match="is autoregressive"):
        pool.compressor("dllm_confidence", {"model": PACKAGED_SMOLLM2}, None).compress(TEXT, 2.0, len)
    with pytest.raises(UserError, match="is not one"):
        pool.compressor("self_information", {"model": str(tiny_checkpoint)}, None).compress(TEXT, 2.0, len)
    with pytest.raises(UserError, match="copies must be from 1 to 64"):
        get_compressor("dllm_confidence", copies=0)


def test_the_cli_compares_with_the_confidence_compressor(tiny_checkpoint, db_url, capsys):
    import json

    from core.__main__ import main

    assert main(["compare", "--model", str(tiny_checkpoint), "--prompt", TEXT, "--compressor", "dllm_confidence",
                 "--compressor-option", "force_reserve_digit=true", "--preset", "small", "--db", db_url,
                 "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["compressor"] == "dllm_confidence" and view["compress_forward_passes"] == 1
    assert "48" in view["compressed_prompt"] and "52" in view["compressed_prompt"]
