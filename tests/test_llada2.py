"""LLaDA 2.x: its checkpoint layout and forward pass restated from the tensors, its block sampler restated as its
authors' generate() runs one prompt, the exact block cache, the threshold and editing rules on scripted logits, and
the family end to end through the generator."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from core.llada import block_diffusion
from core.llada.moe import MoELLaDA


@pytest.fixture(scope="module")
def llada2_dir(tmp_path_factory):
    from family_checkpoints import llada2_checkpoint

    return llada2_checkpoint(tmp_path_factory.mktemp("tiny-llada2"), seed=3)


@pytest.fixture(scope="module")
def model(llada2_dir):
    from core.llada.loader import load_llada

    return load_llada(llada2_dir, "cpu", torch.float32)


def restated_llada2_logits(state: dict, raw: dict, ids: torch.Tensor, block: int) -> torch.Tensor:
    """LLaDA 2.x's forward written out from its checkpoint tensors: the fused query_key_value split [Q | K | V] by
    heads, RMSNorm on each query and key head before RoPE on the first partial_rotary_factor of its dimensions,
    grouped-query attention seeing its own block and those before it (blocks counted from position 0); a dense
    SwiGLU in the first layers, then per token the sigmoid router (its bias choosing groups and experts only, groups
    scored by their two best, weights the unbiased scores normalised and scaled) plus the shared expert."""
    heads, kv, hd = raw["num_attention_heads"], raw["num_key_value_heads"], raw["head_dim"]
    eps, T, k_top, rot = raw["rms_norm_eps"], ids.shape[0], raw["num_experts_per_tok"], int(
        raw["head_dim"] * raw["partial_rotary_factor"])

    def rms(v, w):
        return w * (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps))

    def swiglu(h, prefix):
        return state[prefix + "down_proj.weight"] @ (F.silu(state[prefix + "gate_proj.weight"] @ h)
                                                     * (state[prefix + "up_proj.weight"] @ h))

    inv_freq = 1.0 / raw["rope_theta"] ** (torch.arange(0, rot, 2).float() / rot)
    angles = torch.arange(T).float()[:, None] * inv_freq
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def turn(v):
        head, rest = v[..., :rot], v[..., rot:]
        return torch.cat([head * cos + torch.cat([-head[..., rot // 2:], head[..., :rot // 2]], -1) * sin, rest], -1)

    sees = torch.tensor([[j // block <= i // block for j in range(T)] for i in range(T)])
    x = state["model.word_embeddings.weight"][ids]
    for i in range(raw["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, state[p + "input_layernorm.weight"])
        qkv = (h @ state[p + "attention.query_key_value.weight"].T).view(T, heads + 2 * kv, hd)
        q, k, v = qkv[:, :heads].transpose(0, 1), qkv[:, heads:heads + kv].transpose(0, 1), qkv[:, heads + kv:].transpose(0, 1)
        q, k = turn(rms(q, state[p + "attention.query_layernorm.weight"])), turn(rms(k, state[p + "attention.key_layernorm.weight"]))
        k, v = k.repeat_interleave(heads // kv, 0), v.repeat_interleave(heads // kv, 0)
        scores = (q @ k.transpose(1, 2) / math.sqrt(hd)).masked_fill(~sees, -torch.inf)
        x = x + (torch.softmax(scores, -1) @ v).transpose(0, 1).reshape(T, heads * hd) @ state[p + "attention.dense.weight"].T
        h = rms(x, state[p + "post_attention_layernorm.weight"])
        if i < raw["first_k_dense_replace"]:
            x = x + torch.stack([swiglu(h[t], p + "mlp.") for t in range(T)])
            continue
        scores = torch.sigmoid(h @ state[p + "mlp.gate.weight"].T)
        biased = scores + state[p + "mlp.gate.expert_bias"]
        per_group = raw["num_experts"] // raw["n_group"]
        moe = torch.zeros_like(h)
        for t in range(T):
            groups = [biased[t, g * per_group:(g + 1) * per_group].topk(2).values.sum() for g in range(raw["n_group"])]
            kept = sorted(range(raw["n_group"]), key=lambda g: -groups[g])[:raw["topk_group"]]
            candidates = [e for g in kept for e in range(g * per_group, (g + 1) * per_group)]
            chosen = sorted(candidates, key=lambda e: -biased[t, e])[:k_top]
            weights = scores[t, chosen] / scores[t, chosen].sum() * raw["routed_scaling_factor"]
            for w, e in zip(weights, chosen):
                moe[t] += w * swiglu(h[t], f"{p}mlp.experts.{e}.")
            moe[t] += swiglu(h[t], p + "mlp.shared_experts.")
        x = x + moe
    return rms(x, state["model.norm.weight"]) @ state["lm_head.weight"].T


def test_llada2_loads_its_real_layout_and_computes_its_restated_math(llada2_dir, model):
    from safetensors.torch import load_file

    raw = json.loads((llada2_dir / "config.json").read_text())
    state = load_file(str(llada2_dir / "model.safetensors"))
    assert {"model.word_embeddings.weight", "model.layers.0.attention.query_key_value.weight",
            "model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.gate.expert_bias",
            "model.layers.2.mlp.shared_experts.down_proj.weight", "model.layers.2.mlp.experts.7.up_proj.weight"} <= set(state)
    assert "model.layers.0.mlp.gate.weight" not in state  # the first layer is dense
    assert isinstance(model, MoELLaDA)
    cfg = model.cfg
    assert (cfg.rotary_dim, cfg.dense_layers, cfg.shared_experts, cfg.router, cfg.block_causal) == (4, 1, 1,
                                                                                                     "sigmoid_grouped", 32)
    assert model.layers[1].mlp.expert_bias.dtype == torch.float32
    ids = torch.randint(0, raw["vocab_size"], (11,), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model(ids[None])[0], restated_llada2_logits(state, raw, ids, 32), atol=1e-5, rtol=1e-4)
    assert torch.allclose(model(ids[None], block_length=4)[0], restated_llada2_logits(state, raw, ids, 4),
                          atol=1e-5, rtol=1e-4)


def test_a_llada2_checkpoint_without_its_router_bias_or_asking_for_a_tied_head_is_named(llada2_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from core.llada.loader import CheckpointError, load_llada

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((llada2_dir / name).read_bytes())
    state = load_file(str(llada2_dir / "model.safetensors"))
    del state["model.layers.2.mlp.gate.expert_bias"]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing 1 tensor\(s\): model\.layers\.2\.mlp\.gate\.expert_bias"):
        load_llada(broken, "cpu")
    raw = json.loads((llada2_dir / "config.json").read_text()) | {"tie_word_embeddings": True}
    (broken / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="a tied head"):
        load_llada(broken, "cpu")


def authors_generate(model, prompt: torch.Tensor, *, gen_length: int, block_length: int, steps: int,
                     threshold: float, editing_threshold: float | None, max_post_steps: int, eos_early_stop: bool,
                     mask_id: int, eos_id: int) -> torch.Tensor:
    """The authors' generate() for one prompt at temperature 0, restated: a canvas of whole blocks from position 0,
    each step a forward over the blocks up to the current one; masks above the threshold committed when there are
    at least the step's count of them, else that many most probable; with an editing threshold (2.1) a committed
    answer token of the block replaced by a different proposal above it, the block ending on a step that neither
    commits nor edits or after max_post_steps steps with no mask left; stop after a block holding EOS."""
    P, L = len(prompt), block_length
    blocks = -(-(P + gen_length) // L)
    x = torch.full((blocks * L,), mask_id)
    x[:P] = prompt
    counts = [L // steps + (i < L % steps) for i in range(steps)]
    for b in range(P // L, blocks):
        lo, hi = b * L, (b + 1) * L
        in_answer = torch.arange(lo, hi) >= P
        step = post = 0
        while True:
            old = x[lo:hi].clone()
            active = (old == mask_id) & in_answer
            if editing_threshold is None and not active.any():
                break
            if editing_threshold is not None and not active.any():
                post += 1
                if post > max_post_steps:
                    break
            p, x0 = model(x[None, :hi], block_length=L)[0, lo:hi].softmax(-1).max(-1)
            n = 1 if editing_threshold is not None else counts[step]
            conf = torch.where(active, p, -torch.inf)
            if (conf > threshold).sum() >= n:
                commit = conf > threshold
            else:
                commit = torch.zeros(L, dtype=torch.bool)
                commit[conf.topk(min(n, int(active.sum()))).indices] = True
            edit = torch.zeros(L, dtype=torch.bool)
            if editing_threshold is not None:
                edit = ~active & in_answer & (p > editing_threshold) & (x0 != old)
            x[lo:hi] = torch.where(commit | edit, x0, old)
            step += 1
            if editing_threshold is not None and not active.any() and not edit.any():
                break
            if eos_early_stop and editing_threshold is None and (x[P:hi] == eos_id).any():
                first = P + int((x[P:hi] == eos_id).nonzero()[0])
                if not (x[P:first] == mask_id).any():
                    return torch.where(x[P:P + gen_length] == mask_id, eos_id, x[P:P + gen_length])
        if (x[P:hi] == eos_id).any():
            break
    return torch.where(x[P:P + gen_length] == mask_id, eos_id, x[P:P + gen_length])


SETTINGS = [
    dict(threshold=0.95, editing_threshold=None, steps=8),  # 2.0: one a step
    dict(threshold=0.05, editing_threshold=None, steps=4),  # 2.0: parallel, two a step when few pass
    dict(threshold=0.7, editing_threshold=0.5, steps=8),  # 2.1 quality mode
    dict(threshold=0.5, editing_threshold=0.0, steps=8),  # 2.1 speed mode
]


@pytest.mark.parametrize("setting", SETTINGS, ids=["2.0", "2.0-parallel", "2.1-quality", "2.1-speed"])
def test_the_block_sampler_is_the_authors_generate_batched_and_cached(llada2_dir, model, setting):
    from core.llada.loader import load_tokenizer

    vocab = load_tokenizer(llada2_dir).get_vocab()
    mask_id, eos_id = vocab["<|mask|>"], vocab["<|endoftext|>"]
    prompts = [torch.randint(4, 60, (n,), generator=torch.Generator().manual_seed(n)) for n in (7, 13, 3)]
    width = max(len(p) for p in prompts)
    ids = torch.full((3, width), model.cfg.pad_token_id)
    attention = torch.zeros(3, width, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):], attention[row, width - len(p):] = p, 1
    editing = setting["editing_threshold"]
    common = dict(gen_length=20, block_length=8, steps=setting["steps"], threshold=setting["threshold"],
                  editing_threshold=-1 if editing is None else editing, max_post_steps=3, eos_early_stop=True,
                  mask_id=mask_id, eos_id=eos_id)
    expected = [authors_generate(model, p, **common | {"editing_threshold": editing}) for p in prompts]
    for cache in (False, True):
        canvas = block_diffusion.generate(model, ids, attention, cache=cache, **common)
        assert [row.tolist() for row in canvas[:, width:]] == [e.tolist() for e in expected], f"cache={cache}"


class Scripted(torch.nn.Module):
    """A stand-in model whose logits at each call are given: ``script(call, canvas)`` -> (B, T, V)."""

    def __init__(self, script, vocab: int = 8):
        super().__init__()
        self.script, self.vocab, self.calls = script, vocab, 0

    def forward(self, input_ids, attention_mask=None, block_length=None):
        self.calls += 1
        return self.script(self.calls, input_ids)


def peaked(token: int, p: float, vocab: int = 8) -> torch.Tensor:
    """Logits whose softmax gives ``token`` probability p and the rest an equal share."""
    rest = (1 - p) / (vocab - 1)
    logits = torch.full((vocab,), math.log(rest))
    logits[token] = math.log(p)
    return logits


MASK, EOS = 7, 6


def test_masks_above_the_threshold_commit_together_else_the_step_s_count_of_the_best():
    confidences = [0.9, 0.2, 0.97, 0.3]  # block of 4 after a prompt of 4

    def script(call, canvas):
        logits = torch.stack([peaked(1, 0.5)] * canvas.shape[1])
        for j, p in enumerate(confidences):
            logits[4 + j] = peaked(2 + j % 3, p)
        return logits[None]

    prompt = torch.tensor([[1, 1, 1, 1]])
    run = dict(gen_length=4, block_length=4, mask_id=MASK, eos_id=EOS, eos_early_stop=False)
    trace = block_diffusion.Trace(torch.ones(1, 8), 4)
    block_diffusion.generate(Scripted(script), prompt, steps=4, threshold=0.85, trace=trace, **run)
    assert trace.commit_step[0].tolist() == [1, 3, 1, 2]  # two pass 0.85 at once; then one a step, the best first
    trace = block_diffusion.Trace(torch.ones(1, 8), 4)
    block_diffusion.generate(Scripted(script), prompt, steps=2, threshold=0.95, trace=trace, **run)
    assert trace.commit_step[0].tolist() == [1, 2, 1, 2]  # one passes 0.95 but the step's count is 2: the best 2


@pytest.mark.parametrize("p_new, edits", [(0.8, True), (0.4, False)])
def test_an_edit_replaces_a_committed_answer_token_only_above_the_editing_threshold(p_new, edits):
    """Block 0 holds prompt tokens 0-2 and the answer's first position 3; block 1 positions 4-7. Once block 1 is
    filled, the model proposes other tokens, with p_new, for a prompt token, for the answer token of block 0 and for
    an answer token of block 1: only the last may change, and only when p_new passes the editing threshold 0.5."""

    def script(call, canvas):
        logits = torch.stack([peaked(int(t) if t != MASK else 1, 0.9) for t in canvas[0]])
        if canvas.shape[1] == 8 and (canvas[0, 4:] != MASK).all():
            for position in (1, 3, 5):
                logits[position] = peaked(4, p_new)
        return logits[None]

    prompt = torch.tensor([[2, 3, 2]])
    out = block_diffusion.generate(Scripted(script), prompt, gen_length=5, block_length=4, steps=4, threshold=0.95,
                                   editing_threshold=0.5, max_post_steps=2, eos_early_stop=False, mask_id=MASK,
                                   eos_id=EOS)
    assert out[0, :3].tolist() == [2, 3, 2]
    assert out[0, 3].item() == 1  # block 0 is never revisited
    assert out[0, 5].item() == (4 if edits else 1)
    assert (out[0, [4, 6, 7]] == 1).all()


def test_without_editing_an_answer_ends_at_its_first_eos_once_no_mask_comes_before_it():
    def script(call, canvas):
        logits = torch.stack([peaked(1, 0.6)] * canvas.shape[1])
        logits[:, EOS] = -10
        if canvas.shape[1] >= 8:
            logits[4] = peaked(1, 0.8)  # the answer's first position, the best of the rest
            logits[5] = peaked(EOS, 0.99)  # the answer's second
        return logits[None]

    model = Scripted(script)
    out = block_diffusion.generate(model, torch.tensor([[2, 3, 2, 3]]), gen_length=12, block_length=4, steps=4,
                                   threshold=0.9, mask_id=MASK, eos_id=EOS, eos_early_stop=True)
    assert out[0, 4:].tolist() == [1, EOS] + [EOS] * 10
    assert model.calls == 2  # EOS first, then the mask before it: done, mid-block, with two masks left


def test_llada2_through_the_generator_with_its_template_presets_and_tokens(llada2_dir):
    from core.errors import UserError
    from core.generation.generator import LLaDAGenerator
    from core.llada import families
    from core.llada.sampler import PRESETS, SamplerParams
    from core.pipeline.service import default_preset

    generator = LLaDAGenerator(str(llada2_dir), "cpu")
    vocab = generator.tokenizer.get_vocab()
    assert (generator.mask_id, generator.eos_id, generator.eot_id) == (vocab["<|mask|>"], vocab["<|endoftext|>"],
                                                                     vocab["<|role_end|>"])
    assert generator.info.kind == "llada2" and default_preset(str(llada2_dir)) == "llada2"
    assert families.CHECKPOINT_PRESETS["inclusionAI/LLaDA2.1-mini"] == "llada21-quality"
    assert generator.tokenizer.decode(generator.encode_prompt("How many?")) == (
        "<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>How many?<|role_end|>"
        "<role>ASSISTANT</role>")
    for preset in ("llada2", "llada21-quality", "llada21-speed"):
        assert PRESETS[preset][1].problems() == [] and not PRESETS[preset][1].approximate
    params = SamplerParams(gen_length=24, steps=8, block_length=8, mode="block", threshold=0.95, cache="block")
    cached = generator.generate(["Tom has 3 apples.", "Ann has 5 pears and buys 2 more."], params, seed=0)
    plain = generator.generate(["Tom has 3 apples.", "Ann has 5 pears and buys 2 more."],
                               SamplerParams(**params.to_dict() | {"cache": "none"}), seed=0)
    assert [g.token_ids for g in cached] == [g.token_ids for g in plain]
    assert all(len(g.token_ids) == 24 and len(g.commit_steps) == 24 for g in cached)
    assert all(c.tokens_processed < p.tokens_processed for c, p in zip(cached, plain))  # same tokens, less compute
    with pytest.raises(UserError, match="LLaDA 2.x model; it decodes with its own block sampler"):
        generator.generate(["Hi"], PRESETS["gsm8k"][1], seed=0)


@pytest.mark.parametrize("changes, complaint", [
    (dict(steps=16, block_length=8), "exceed block_length"),
    (dict(cache="dual"), "cache 'none' or 'block'"),
    (dict(editing_threshold=1.5), "editing_threshold"),
    (dict(cfg_scale=1.0), "cfg_scale"),
])
def test_block_sampler_settings_out_of_its_range_are_named(changes, complaint):
    from core.llada.sampler import SamplerParams

    base = dict(gen_length=64, steps=8, block_length=8, mode="block")
    assert SamplerParams(**base).problems() == []
    assert any(complaint in problem for problem in SamplerParams(**base | changes).problems())
    assert any("mode 'block'" in problem for problem in SamplerParams(editing_threshold=0.5).problems())


def test_the_playground_shows_llada2_s_card_and_runs_its_block_sampler(llada2_dir, db_url, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core.pipeline.worker import job_state
    from pages.shared import load_view
    from test_pages import wait_for_job

    monkeypatch.setenv("COMPRESSLENS_MODEL", str(llada2_dir))
    at = AppTest.from_file(str(Path(__file__).parents[1] / "pages" / "playground.py"), default_timeout=120)
    at.run()
    assert [e.label for e in at.expander if e.label.startswith("Model card")] == ["Model card: LLaDA 2.x"]
    preset = next(s for s in at.selectbox if s.label == "Sampler preset")
    assert preset.value == "llada2"
    assert not any(s.label == "cache (approximate)" for s in at.selectbox)  # LLaDA's fast modes are not offered
    preset.set_value("custom")
    at.run()
    next(n for n in at.number_input if n.label == "gen_length").set_value(24)
    next(n for n in at.number_input if n.label == "block_length").set_value(8)
    next(n for n in at.number_input if n.label == "steps").set_value(8)
    next(c for c in at.checkbox if c.label == "editing (2.1)").check()
    at.run()
    next(n for n in at.number_input if n.label == "editing_threshold").set_value(0.5)
    at.text_area(key="prompt").input("Tom has 3 apples and buys 5 more. How many apples does he have?")
    at.run()
    next(b for b in at.button if b.label == "Run").click()
    at.run()
    assert not at.exception and not at.error, at.error
    state = wait_for_job(db_url, at.session_state["job_id"])
    assert state["status"] == "done", job_state(db_url, at.session_state["job_id"])
    sampler = load_view(state["run_id"])["sampler"]
    assert (sampler["mode"], sampler["cache"], sampler["editing_threshold"], sampler["block_length"]) == (
        "block", "block", 0.5, 8)


def test_a_plan_with_llada2_and_another_family_gives_each_its_own_sampler(llada2_dir, tiny_checkpoint):
    from core.errors import UserError
    from core.pipeline.experiments import Plan

    plan = Plan(models=[str(tiny_checkpoint), str(llada2_dir)], gen_length={"math": 64})
    block = plan.sampler_params(str(llada2_dir), "math")
    assert (block.mode, block.gen_length, block.block_length, block.cache, block.problems()) == (
        "block", 64, 32, "block", [])
    assert plan.sampler_params(str(tiny_checkpoint), "math").mode == "reference"
    # Its answer need not fill whole blocks: the canvas runs to the end of the block that holds it.
    assert Plan(models=[str(llada2_dir)], gen_length={"math": 48}).sampler_params(str(llada2_dir), "math").gen_length == 48
    with pytest.raises(UserError, match="editing_threshold"):
        Plan(models=[str(llada2_dir)], preset="custom", sampler={"mode": "reference", "editing_threshold": 0.5}
             ).sampler_params(str(llada2_dir), "math")
