"""Reconstruction by infill: the canvas, the length rules, the fill, the scores and the conditions."""

import pytest
import torch

from core.errors import UserError
from core.generation.generator import LLaDAGenerator
from core.llada import sampler
from core.pipeline import infill
from core.pipeline.compressors import Word

PROMPT = "Tom has 3 red apples and buys 15 more at the shop"
KEPT = [True, True, False, False, True, True, False, False, True, True, False, False]


def words(text=PROMPT, kept=KEPT):
    return [Word(w, None, None, k) for w, k in zip(text.split(), kept)]


def test_dropped_runs_become_gaps_counted_by_the_rule():
    runs = infill.segments(words())
    assert [(s.text, s.kept) for s in runs] == [("Tom has", True), ("3 red", False), ("apples and", True),
                                                ("buys 15", False), ("more at", True), ("the shop", False)]
    spaces = lambda text: text.count(" ")  # a stand-in tokenizer: one token per leading space and word
    assert infill.mask_counts(runs, "oracle", 2, spaces) == [2, 2, 2]
    assert infill.mask_counts(runs, "fixed", 3, spaces) == [3, 3, 3]
    assert infill.shown(runs, [2, 1, 3]) == "Tom has [MASK][MASK] apples and [MASK] more at [MASK][MASK][MASK]"
    with pytest.raises(UserError, match="oracle, fixed"):
        infill.mask_counts(runs, "guess", 2, spaces)
    with pytest.raises(UserError, match="from 1 to 64"):
        infill.check_rule("fixed", 0)


def test_restored_counts_each_dropped_word_once_beyond_the_kept_ones():
    # "3" and "15" come back, "red" does not; "the" is claimed by nothing else, "shop" is missing.
    scores = infill.restored(words(), "Tom has 3 green apples and buys 15 more at the market")
    assert scores == {"dropped_words_restored": 4 / 6, "dropped_numbers_restored": 2 / 2}
    # A kept word repeated does not count as a restored one.
    assert infill.restored(words("a b a", [True, False, True]), "a a a")["dropped_words_restored"] == 0.0
    assert infill.restored(words("a b a", [True, False, True]), "a a b a") == {"dropped_words_restored": 1.0}


def test_marks_agree_with_the_restored_share():
    text = "Tom has 3 green apples and buys 15 more at the market"
    pieces = infill.marked(words(), text)
    assert "".join(p for p, _ in pieces) == text
    assert [p for p, m in pieces if m == "restored"] == ["3", "buys", "15", "the"]
    assert [p for p, m in pieces if m == "new"] == ["green", "market"]


def test_infill_writes_only_into_mask_positions(tiny_checkpoint):
    generator = LLaDAGenerator(str(tiny_checkpoint), "cpu")
    ids = generator.tokenizer("Tom has 3 apples and buys 5 more", add_special_tokens=False).input_ids
    x = torch.tensor([ids[:2] + [generator.mask_id] * 3 + ids[2:]])
    out = sampler.infill(generator.model, x, steps=3, mask_id=generator.mask_id)
    slots = x == generator.mask_id
    assert torch.equal(out[~slots], x[~slots]) and not (out == generator.mask_id).any()


def test_the_oracle_canvas_holds_the_dropped_token_count_and_the_kept_text(tiny_checkpoint, monkeypatch):
    generator = LLaDAGenerator(str(tiny_checkpoint), "cpu")
    seen = []
    real_infill = sampler.infill
    monkeypatch.setattr(sampler, "infill", lambda model, x, **kw: (seen.append(x.clone()), real_infill(model, x, **kw))[1])
    runs = infill.segments(words())
    counts = infill.mask_counts(runs, "oracle", 2, generator.count_tokens)
    params = sampler.SamplerParams(gen_length=16, steps=16, block_length=16)
    [filled] = generator.infill([(runs, counts)], params, seed=0)
    dropped = sum(generator.count_tokens(" " + s.text) for s in runs if not s.kept)
    assert (seen[0] == generator.mask_id).sum().item() == dropped == sum(counts)
    assert len(filled.token_ids) == dropped and filled.forward_calls == dropped  # one commit a step
    position = 0
    for segment in runs:  # every kept run is in the text, in order
        if segment.kept:
            position = filled.text.index(segment.text, position) + len(segment.text)
    fixed = generator.infill([(runs, [1, 1, 1])], params, seed=0)[0]
    assert len(fixed.token_ids) == 3


def test_an_experiment_runs_and_scores_both_reconstructions(tiny_plan, tiny_checkpoint, db_url):
    from core.pipeline.experiments import CONDITIONS, Runner, experiment_summary, find_or_create
    from core.pipeline.service import ModelPool
    from db.queries import output_rows
    from db.session import session_scope

    plan = tiny_plan(tiny_checkpoint, conditions=list(CONDITIONS), ratios=[2.0], infill_length="fixed", infill_k=2)
    experiment_id = find_or_create(plan, db_url)
    Runner(experiment_id, ModelPool("cpu"), db_url).run()
    summary = experiment_summary(db_url, experiment_id)
    assert summary["status"] == "done" and summary["outputs"] == 3 * (1 + 5)
    with session_scope(db_url) as session:
        rows = output_rows(session, experiment_id)
    by = {(r["source_id"], r["condition"]): r for r in rows}
    for source_id in {r["source_id"] for r in rows}:
        canvas = by[(source_id, "infilled")]["prompt"]
        compressed = by[(source_id, "compressed")]
        # Each gap is two masks; the reasoning condition answers the filled prompt with the task's instruction.
        assert infill.MASK_SHOWN * 2 in canvas and infill.MASK_SHOWN * 3 not in canvas
        assert by[(source_id, "infilled")]["output"] in by[(source_id, "reasoning_on_infilled")]["prompt"]
        for rebuilt in ("reconstructed", "infilled"):
            share = by[(source_id, rebuilt)]["dropped_words_restored@original_prompt"]
            assert 0.0 <= share <= 1.0 and by[(source_id, rebuilt)]["extracted_answer"] is None
        assert compressed["ratio_achieved"] == by[(source_id, "infilled")]["ratio_achieved"]


def test_the_autoregressive_control_cannot_infill():
    from core.pipeline import conditions

    class Control:
        info = type("Info", (), {"model_id": "smollm2-135m-instruct"})()

    with pytest.raises(UserError, match="autoregressive: the infilled conditions need a diffusion model"):
        conditions.generate(Control(), "infilled", [], [], sampler.SamplerParams(), 0)


def test_a_comparison_runs_the_reconstructions_it_is_asked_for(tiny_checkpoint, db_url, capsys):
    import json

    from core.__main__ import main

    assert main(["compare", "--model", str(tiny_checkpoint), "--prompt", PROMPT, "--compressor", "random",
                 "--ratio", "2", "--preset", "small", "--db", db_url, "--json", "--infill-length", "fixed",
                 "--conditions", "original,compressed,reconstructed,infilled,reasoning_on_infilled"]) == 0
    view = json.loads(capsys.readouterr().out)
    others = {c["name"]: c for c in view["other_conditions"]}
    assert list(others) == ["reconstructed", "infilled", "reasoning_on_infilled"]
    gaps = sum(1 for s in infill.segments(view["words"]) if not s.kept)
    assert others["infilled"]["prompt"].count(infill.MASK_SHOWN) == 2 * gaps
    assert others["reasoning_on_infilled"]["prompt"] == others["infilled"]["output"]
    for rebuilt in ("reconstructed", "infilled"):
        assert "dropped_words_restored" in others[rebuilt]["metrics"]["original_prompt"]
    assert main(["compare", "--model", str(tiny_checkpoint), "--prompt", PROMPT, "--compressor", "random",
                 "--db", db_url, "--conditions", "original,compressed,reasoning_on_infilled"]) == 2
    assert "reasoning_on_infilled needs the infilled condition too" in capsys.readouterr().err
