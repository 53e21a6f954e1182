import pytest

from core import render
from core.pipeline import metrics


def test_exact_match_is_total_on_gsm8k_gold_against_itself(gsm8k_questions):
    assert len(gsm8k_questions) == 1319
    scores = [metrics.exact_match(metrics.extract_answer(q["answer"]), metrics.gold_answer(q["answer"]))
              for q in gsm8k_questions]
    assert sum(scores) / len(scores) == 1.0


@pytest.mark.parametrize("output,expected", [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("The answer is 1,250.", "1250"),
    ("So the final answer is $3.50 per cup.", "3.5"),
    ("First 12, then 7 more, giving 19 apples", "19"),
    ("The answer is -4", "-4"),
    ("#### 5 and later 7", "5"),
    ("I cannot tell.", None),
])
def test_answer_extraction(output, expected):
    assert metrics.extract_answer(output) == expected


def test_gold_answer_strips_commas_and_misses_cleanly():
    assert metrics.gold_answer("48/2 = <<48/2=24>>24\n#### 1,024") == "1024"
    assert metrics.gold_answer("no marker here") is None
    assert metrics.exact_match("5", None) is None
    assert metrics.exact_match(None, "5") == 0.0


def test_bleu_and_rouge_extremes():
    text = "Natalia sold 48 clips in April and 24 clips in May."
    assert metrics.bleu(text, text) == pytest.approx(100.0)
    assert metrics.bleu("purple elephants dance quietly", text) < 5
    assert metrics.rouge(text, text) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert metrics.rouge("purple elephants dance quietly", text) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    # With stemming "clips" matches "clip": 3 of 4 candidate words match all 3 reference words.
    assert metrics.rouge("she sold a clip", "she sold clips")["rouge1"] == pytest.approx(2 * 0.75 * 1.0 / 1.75)


def test_bertscore_identical_is_max_disjoint_is_low():
    same = metrics.bertscore("The bakery made 518 dollars.", "The bakery made 518 dollars.", metrics.MINILM)
    assert all(v == pytest.approx(1.0, abs=1e-4) for v in same.values())
    far = metrics.bertscore("Quantum chromodynamics describes gluons.", "I baked banana bread on Sunday.",
                            metrics.MINILM)
    assert far["bertscore_f1"] < 0.5 and set(far) == {"bertscore_p", "bertscore_r", "bertscore_f1"}
    # Omission shows as recall below precision: the candidate holds only part of the reference.
    short = metrics.bertscore("The bakery made money.", "The bakery made 518 dollars over two busy days.",
                              metrics.MINILM)
    assert short["bertscore_r"] < short["bertscore_p"]


def test_backbones_offline():
    assert metrics.default_backbone() == metrics.MINILM  # roberta-large cannot be had offline here
    with pytest.raises(Exception, match="roberta-large is not downloaded"):
        metrics.bertscore("a", "b", metrics.ROBERTA_LARGE)


def test_a_machine_with_no_network_is_offline_without_hf_hub_offline(monkeypatch):
    """The dashboard started by hand on an unplugged machine: roberta-large is neither cached nor reachable,
    so the default backbone is MiniLM; with the hub answering, roberta-large stays the default."""
    import socket

    from huggingface_hub import constants

    def refused(address, timeout):
        raise OSError("no route to host")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", refused)
    metrics.hub_reachable.cache_clear()
    assert metrics.default_backbone() == metrics.MINILM
    with pytest.raises(Exception, match="roberta-large is not downloaded"):
        metrics.bertscore("a", "b", metrics.ROBERTA_LARGE)

    class Answered:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: Answered())
    metrics.hub_reachable.cache_clear()
    assert metrics.default_backbone() == metrics.ROBERTA_LARGE
    metrics.hub_reachable.cache_clear()


def test_markdown_escaping_keeps_dollars_and_markup_literal():
    assert render.md_escape("costs $3 and $5") == "costs \\$3 and \\$5"
    assert render.md_escape("*bold* _it_ [x](y) <b>") == "\\*bold\\* \\_it\\_ \\[x\\](y) \\<b\\>"


def test_word_diff_and_html_escaping():
    pieces = render.word_diff("the answer is 18 dollars", "the answer is 20 dollars today")
    assert pieces == [("same", "the answer is"), ("del", "18"), ("ins", "20"), ("same", "dollars"), ("ins", "today")]
    assert render.diff_stats(pieces) == {"same": 4, "del": 1, "ins": 2}
    html = render.diff_html("<script>alert(1)</script> $5 and $6", "<b>bold</b> $5")
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    marked = render.marked_prompt_html("Keep <i>this</i> drop", [
        {"text": "Keep", "start": 0, "end": 4, "kept": True},
        {"text": "<i>this</i>", "start": 5, "end": 16, "kept": False},
        {"text": "drop", "start": 17, "end": 21, "kept": False}])
    assert '<span class="cl-drop" title="dropped">&lt;i&gt;this&lt;/i&gt;</span>' in marked
    assert '<span class="cl-drop" title="dropped">drop</span>' in marked and "<i>" not in marked
