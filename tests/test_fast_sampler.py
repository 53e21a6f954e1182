"""The fast sampler: token-identical to the reference where it claims to be, and what each approximation does."""

import pytest
import torch

from core.generation import demo
from core.generation.generator import LLaDAGenerator
from core.llada import fast, sampler
from core.llada.loader import load_llada, load_tokenizer
from core.llada.sampler import PRESETS, SamplerParams
from core.llada.tokenizer import EOS, EOT, MASK, chat_prompt
from core.pipeline.math_eval import evaluate


@pytest.fixture(scope="module")
def gqa_checkpoint(tmp_path_factory):
    """Grouped-query attention, so the cached path's key/value sharing is exercised too."""
    return demo.build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-gqa"), n_heads=4, n_kv_heads=2, seed=3)


@pytest.fixture(scope="module")
def shifted_checkpoint(tmp_path_factory):
    """Grouped-query attention with shifted prediction, as in the SmolLM2 diffusion model. (Untied: a
    random tied head proposes the mask token itself, which real checkpoints never do.)"""
    return demo.build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-shifted"), n_heads=4, n_kv_heads=2,
                                      shifted_prediction=True, seed=4)


@pytest.fixture(scope="module", params=["mha", "gqa", "shifted"])
def setup(request, tiny_checkpoint, gqa_checkpoint, shifted_checkpoint):
    path = {"mha": tiny_checkpoint, "gqa": gqa_checkpoint, "shifted": shifted_checkpoint}[request.param]
    model = load_llada(path, "cpu")
    tok = load_tokenizer(path)
    vocab = tok.get_vocab()
    texts = ["A water tank holds 1,200 liters. How many minutes until it is full?", "Add 3 and 4."]
    encoded = [tok(chat_prompt(tok, t), add_special_tokens=False).input_ids for t in texts]
    return model, {"mask_id": vocab[MASK], "eos_id": vocab[EOS], "eot_id": vocab[EOT]}, encoded


def batch(encoded, ids, rows):
    from core.generation.generator import left_pad

    chosen = [encoded[r] for r in rows]
    prompt, mask = left_pad(chosen, ids["eos_id"])
    return prompt, (mask if len(rows) > 1 else None)


@pytest.mark.parametrize("settings", [
    dict(gen_length=32, steps=32, block_length=8),
    dict(gen_length=32, steps=16, block_length=16),
    dict(gen_length=24, steps=24, block_length=24, logits_eos_inf=True),
    dict(gen_length=32, steps=32, block_length=8, confidence_eos_eot_inf=True),
    dict(gen_length=16, steps=16, block_length=8, remasking="random"),
])
@pytest.mark.parametrize("rows", [[0], [0, 1]])
def test_exact_mode_commits_the_reference_tokens(setup, settings, rows):
    model, ids, encoded = setup
    prompt, mask = batch(encoded, ids, rows)
    reference = sampler.generate(model, prompt, mask, rng=torch.Generator().manual_seed(5), **ids, **settings)
    result = fast.generate(model, prompt, mask, rng=torch.Generator().manual_seed(5), **ids, **settings)
    assert torch.equal(result.canvas, reference)
    assert result.forward_calls == settings["steps"]


def test_steps_that_commit_nothing_cost_no_forward_pass(setup):
    model, ids, encoded = setup
    prompt, mask = batch(encoded, ids, [0, 1])
    # 16 steps per block of 8 masks: half of the reference's steps commit nothing.
    settings = dict(gen_length=16, steps=32, block_length=8, **ids)
    reference = sampler.generate(model, prompt, mask, **settings)
    result = fast.generate(model, prompt, mask, **settings)
    assert torch.equal(result.canvas, reference) and result.forward_calls == 16


def test_a_cache_fresh_from_the_full_pass_gives_the_full_pass_logits(setup):
    model, ids, encoded = setup
    prompt, mask = batch(encoded, ids, [0, 1])
    P = prompt.shape[1]
    x = torch.cat([prompt, torch.full((2, 16), ids["mask_id"])], dim=1)
    x[:, P:P + 3] = prompt[:, -3:]  # some committed tokens in the active block
    mask = torch.cat([mask, torch.ones(2, 16, dtype=mask.dtype)], dim=1)
    rope = fast.Rope(model, mask, 2, x.shape[1])
    start, end = P, P + 8
    block, everything = torch.arange(start, end), torch.arange(x.shape[1])
    full = fast.block_logits(model, x, rope, block, x.shape[1])
    kv = fast.KVCache(model, 2, x.shape[1], x.device)
    first = fast.cached_logits(model, x, rope, kv, everything, block)
    dual = fast.cached_logits(model, x, rope, kv, fast.recomputed_for(model, block), block)
    prefix = fast.cached_logits(model, x, rope, kv, fast.recomputed_for(model, torch.arange(start, x.shape[1])), block)
    for logits in (first, dual, prefix):
        torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cached_modes_fill_every_slot_and_keep_the_prompt(setup, cache):
    model, ids, encoded = setup
    prompt, mask = batch(encoded, ids, [0, 1])
    result = fast.generate(model, prompt, mask, gen_length=32, steps=32, block_length=8, cache=cache, **ids)
    assert torch.equal(result.canvas[:, :prompt.shape[1]], prompt)
    assert not (result.canvas == ids["mask_id"]).any() and result.forward_calls == 32


def test_threshold_commits_at_least_one_per_step_and_everything_above_it(setup):
    model, ids, encoded = setup
    prompt, mask = batch(encoded, ids, [0, 1])
    seen = []
    result = fast.generate(model, prompt, mask, gen_length=16, steps=16, block_length=8, threshold=0.999999,
                           on_step=lambda _d, _t, x: seen.append(x.clone()), **ids)
    masks_left = [(x == ids["mask_id"]).sum(dim=1).tolist() for x in seen]
    assert masks_left[0] == [15, 15] and masks_left[-1] == [0, 0]  # nothing reaches 0.999999: one per step
    assert result.forward_calls == 16
    # a low threshold commits many at once
    low = fast.generate(model, prompt, mask, gen_length=16, steps=16, block_length=8, threshold=1e-9, **ids)
    assert low.forward_calls == 2 and not (low.canvas == ids["mask_id"]).any()


def test_confident_keeps_the_best_of_each_row_with_masks():
    confidence = torch.tensor([[0.2, 0.95, -torch.inf], [-torch.inf, -torch.inf, -torch.inf], [0.1, 0.3, 0.2]],
                              dtype=torch.float64)
    masked = torch.tensor([[True, True, False], [False, False, False], [True, True, True]])
    chosen = fast.confident(confidence, masked, 0.9)
    assert chosen.tolist() == [[False, True, False], [False, False, False], [False, True, False]]


@pytest.mark.slow
def test_window_and_early_stop_on_the_demo_model(demo_generator, demo_heldout):
    """The trained demo model ends its answers with EOS: early stop saves the tail's forward passes
    and, with dual cache and a threshold, keeps the answers of the reference loop."""
    questions, answers, reference = demo_heldout
    fastest = evaluate(demo_generator, questions, answers, PRESETS["small-fast"][1], batch_size=len(questions))
    assert fastest.accuracy >= reference.accuracy - 0.1
    windowed = evaluate(demo_generator, questions, answers,
                        SamplerParams(64, 64, 8, mode="fast", window=8, early_stop=True), batch_size=len(questions))
    assert windowed.accuracy >= reference.accuracy - 0.1
    calls = demo_generator.generate(questions[:4], PRESETS["small-fast"][1], seed=0)[0].forward_calls
    assert calls < 64 / 2  # threshold and early stop: far fewer passes than one per token


def test_modes_are_checked_and_labelled():
    assert SamplerParams(mode="fast").label() == "fast, exact"
    assert "APPROXIMATE" in PRESETS["gsm8k-fast"][1].label() and PRESETS["gsm8k-fast"][1].problems() == []
    assert SamplerParams(cache="dual").problems() == [
        "cache, threshold, entropy_threshold, early_stop and window need mode 'fast'"]
    assert "threshold must be in [0, 1)" in SamplerParams(mode="fast", threshold=1.5).problems()
    assert "classifier-free guidance" in SamplerParams(mode="fast", cfg_scale=1.0).problems()[0]
    assert SamplerParams(mode="turbo").problems() == ["mode must be one of reference, fast, dream, block"]


def test_out_of_memory_halves_the_batch_goes_on_and_says_so(tiny_checkpoint, monkeypatch):
    generator = LLaDAGenerator(str(tiny_checkpoint), "cpu")
    real = LLaDAGenerator._generate
    sizes = []

    def small_gpu(self, encoded, *args):
        sizes.append(len(encoded))
        if len(encoded) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, encoded, *args)

    monkeypatch.setattr(LLaDAGenerator, "_generate", small_gpu)
    prompts = [f"Add {i} and {i + 1}." for i in range(7)]
    params = SamplerParams(16, 16, 8)
    outputs = generator.generate(prompts, params, seed=0)
    assert len(outputs) == 7 and all(o.token_ids for o in outputs)
    assert sizes == [7, 3, 3, 1]
    assert generator.notes == ["GPU out of memory at batch 7: going on at batch 3"]
    generator.generate(prompts[:4], params, seed=0)  # later batches start at the size that worked
    assert sizes[4:] == [3, 1]


def test_cli_and_experiments_use_the_modes_through_the_sampler_settings(tiny_checkpoint, db_url, capsys):
    import json

    from core.__main__ import main
    from core.pipeline.experiments import Plan, Runner, find_or_create
    from core.pipeline.service import ModelPool
    from db import models
    from db.session import session_scope

    question = "A tank holds 1,200 liters and fills at 15 liters a minute. How many minutes to fill it?"
    code = main(["compare", "--model", str(tiny_checkpoint), "--prompt", question, "--compressor", "random",
                 "--ratio", "2", "--preset", "custom", "--sampler-option", "gen_length=16",
                 "--sampler-option", "steps=16", "--sampler-option", "block_length=8",
                 "--sampler-option", "mode=fast", "--sampler-option", "threshold=1e-9", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sampler"]["mode"] == "fast" and out["sampler"]["threshold"] == 1e-9
    plan = Plan.from_dict({"name": "fast", "source": "builtin", "n_prompts": 2, "conditions": ["original"],
                           "compressors": [], "models": [str(tiny_checkpoint)], "preset": "custom",
                           "sampler": {"gen_length": 16, "steps": 16, "block_length": 8, "mode": "fast",
                                       "cache": "dual", "threshold": 1e-9}})
    Runner(find_or_create(plan, db_url), ModelPool("cpu"), db_url).run()
    with session_scope(db_url) as session:
        run = session.query(models.Run).filter(models.Run.kind == "experiment").one()
        calls = [o.forward_calls for o in session.query(models.Output)
                 .join(models.Condition).join(models.Item).filter(models.Item.run_id == run.id)]
        stored = next(iter(run.sampler_params.values()))
    assert stored["cache"] == "dual" and calls == [2, 2]  # one pass per block: everything clears the threshold


def test_pages_label_approximate_modes(tiny_checkpoint, db_url, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("COMPRESSLENS_MODEL", str(tiny_checkpoint))
    pages = Path(__file__).resolve().parents[1] / "pages"
    at = AppTest.from_file(str(pages / "playground.py"), default_timeout=60)
    at.run()
    preset = next(s for s in at.selectbox if s.label == "Sampler preset")
    assert not any("APPROXIMATE" in w.value for w in at.warning)
    preset.select("gsm8k-fast").run()
    assert any("APPROXIMATE (dual cache, threshold 0.95, EOS early stop)" in w.value for w in at.warning)
    settings = next(e for e in at.expander if e.label == "Sampler parameters")
    assert not settings.warning  # in sight, not folded away with the settings
    at = AppTest.from_file(str(pages / "experiments.py"), default_timeout=60)
    at.run()
    next(s for s in at.selectbox if s.label == "Sampler preset").select("small-fast").run()
    assert any("APPROXIMATE" in w.value for w in at.warning)


def traced(model, ids, prompt, mask, settings, loop="reference", **fast_args):
    real = torch.ones(prompt.shape[0], prompt.shape[1] + settings["gen_length"], dtype=torch.long)
    if mask is not None:
        real[:, :prompt.shape[1]] = mask
    trace = sampler.Trace(real, settings["gen_length"])
    rng = torch.Generator().manual_seed(5)
    if loop == "reference":
        canvas = sampler.generate(model, prompt, mask, rng=rng, trace=trace, **ids, **settings)
    else:
        canvas = fast.generate(model, prompt, mask, rng=rng, trace=trace, **ids, **settings, **fast_args).canvas
    return canvas, trace


@pytest.mark.parametrize("settings", [dict(gen_length=16, steps=8, block_length=8),
                                      dict(gen_length=16, steps=16, block_length=8, remasking="random")])
def test_the_trajectory_has_one_commit_step_per_token_by_the_schedule_and_the_exact_mode_repeats_it(setup, settings):
    model, ids, encoded = setup
    prompt, mask = batch(encoded, ids, [0, 1])
    canvas, trace = traced(model, ids, prompt, mask, settings)
    steps = settings["steps"]
    per_block = steps // 2
    for row in range(2):
        row_steps = trace.commit_step[row].tolist()
        # Every answer token is committed once, at a step of its own block, as many per step as the schedule says.
        assert all(1 + per_block * (i // 8) <= s <= per_block * (1 + i // 8) for i, s in enumerate(row_steps))
        assert [row_steps.count(s) for s in range(1, steps + 1)] == [16 // steps] * steps
    # The probability recorded is the model's softmax probability of the committed token at that step:
    # restated for the first step, which every row sees on the all-mask canvas.
    first = (trace.commit_step == 1)
    x = torch.full_like(canvas, ids["mask_id"])
    x[:, :prompt.shape[1]] = prompt
    attention = None if mask is None else torch.cat([mask, torch.ones(2, 16, dtype=mask.dtype)], dim=1)
    probs = torch.softmax(model(x, attention_mask=attention).double(), dim=-1)[:, prompt.shape[1]:]
    expected = probs.gather(-1, canvas[:, prompt.shape[1]:].unsqueeze(-1)).squeeze(-1)[first]
    assert torch.allclose(trace.commit_prob[first].double(), expected, atol=1e-5)
    _, fast_trace = traced(model, ids, prompt, mask, settings, loop="fast")
    assert torch.equal(fast_trace.commit_step, trace.commit_step)
    assert torch.allclose(fast_trace.commit_prob, trace.commit_prob, atol=1e-5)


def test_positions_computed_match_hand_counts_for_a_two_block_run(tiny_checkpoint):
    """Rows of 5 and 3 prompt tokens (the second left-padded by 2), 8 answer tokens in 2 blocks of 4,
    2 steps per block: the reference computes the whole canvas at each of its 4 steps; a prefix cache
    computes it at each block's first step, then the block and what follows; a dual cache the block."""
    model = load_llada(tiny_checkpoint, "cpu")
    vocab = load_tokenizer(tiny_checkpoint).get_vocab()
    ids = {"mask_id": vocab[MASK], "eos_id": vocab[EOS], "eot_id": vocab[EOT]}
    prompt = torch.tensor([[5, 6, 7, 8, 9], [ids["eos_id"], ids["eos_id"], 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    settings = dict(gen_length=8, steps=4, block_length=4)
    _, reference = traced(model, ids, prompt, mask, settings)
    assert reference.positions.tolist() == [4 * 13, 4 * 11] and reference.forward_calls == 4
    _, exact = traced(model, ids, prompt, mask, settings, loop="fast")
    assert exact.positions.tolist() == [4 * 13, 4 * 11]
    _, prefix = traced(model, ids, prompt, mask, settings, loop="fast", cache="prefix")
    assert prefix.positions.tolist() == [(13 + 8) + (13 + 4), (11 + 8) + (11 + 4)]
    _, dual = traced(model, ids, prompt, mask, settings, loop="fast", cache="dual")
    assert dual.positions.tolist() == [(13 + 4) + (13 + 4), (11 + 4) + (11 + 4)]
    assert prefix.forward_calls == dual.forward_calls == 4
    cfg_trace = sampler.Trace(torch.ones(2, 13, dtype=torch.long), 8)
    sampler.generate(model, prompt, None, cfg_scale=1.0, trace=cfg_trace, **ids, **settings)
    assert cfg_trace.positions.tolist() == [2 * 4 * 13] * 2  # guidance runs a second, unconditional canvas
