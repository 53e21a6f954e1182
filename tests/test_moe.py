"""The mixture-of-experts LLaDAs (core/llada/moe.py): the routers, the grouped experts, block-causal attention and
partial RoPE, each restated against the model on tiny shapes."""

import math

import pytest
import torch
import torch.nn.functional as F

from core.llada.moe import Experts, MoEConfig, MoELLaDA, rope, route

TINY = dict(d_model=32, n_heads=4, n_kv_heads=2, head_dim=8, n_layers=2, vocab_size=64, dense_hidden=48,
            n_experts=8, top_k=2, expert_hidden=16, mask_token_id=63, eos_token_id=62, pad_token_id=62)
LLADA_MOE = MoEConfig(**TINY, rotary_dim=8, router="softmax")
LLADA2 = MoEConfig(**TINY | dict(n_experts=8, top_k=2), rotary_dim=4, router="sigmoid_grouped", n_group=4,
                   topk_group=2, routed_scaling=2.5, dense_layers=1, shared_experts=1, block_causal=4)


def seeded(cfg: MoEConfig, seed: int = 0) -> MoELLaDA:
    model = MoELLaDA(cfg)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if name.endswith("norm.weight")
                    else torch.randn(p.shape, generator=generator) * 0.2)
        for layer in model.layers:
            if getattr(layer.mlp, "expert_bias", None) is not None:
                layer.mlp.expert_bias.copy_(torch.randn(cfg.n_experts, generator=generator) * 0.1)
    return model.eval()


def test_the_softmax_router_keeps_the_top_k_probabilities_as_they_are():
    logits = torch.tensor([[2.0, 1.0, 0.0, 3.0, -1.0, 0.5, 0.0, 0.0]])
    weights, experts = route(logits, LLADA_MOE, None)
    probabilities = logits.softmax(-1)[0]
    assert experts.tolist() == [[3, 0]]
    assert weights[0].tolist() == pytest.approx([probabilities[3].item(), probabilities[0].item()])
    assert weights.sum() < 1  # not renormalised


def test_the_grouped_sigmoid_router_selects_with_its_bias_and_weighs_without_it():
    # Eight experts in four groups of two; two groups are kept, by the sum of their two best biased scores.
    logits = torch.tensor([[3.0, -3.0, 1.0, 0.9, 0.0, 0.0, 2.0, -2.0]])
    bias = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0])
    weights, experts = route(logits, LLADA2, bias)
    s = logits.sigmoid()[0]
    b = s + bias
    groups = [b[0] + b[1], b[2] + b[3], b[4] + b[5], b[6] + b[7]]
    kept = sorted(range(4), key=lambda g: -groups[g])[:2]
    assert sorted(kept) == [1, 2]  # expert 0 scores best alone, but its group loses; the bias lifts group 2
    candidates = [e for g in kept for e in (2 * g, 2 * g + 1)]
    chosen = sorted(candidates, key=lambda e: -b[e])[:2]
    assert experts[0].tolist() == chosen == [5, 2]
    unbiased = s[chosen]
    assert weights[0].tolist() == pytest.approx((2.5 * unbiased / unbiased.sum()).tolist())


@pytest.mark.parametrize("cfg", [LLADA_MOE, LLADA2], ids=["softmax", "sigmoid_grouped"])
def test_grouped_experts_equal_each_token_summing_its_experts_one_by_one(cfg):
    model = seeded(cfg)
    experts: Experts = model.layers[1].mlp
    x = torch.randn(3, 5, cfg.d_model, generator=torch.Generator().manual_seed(1))
    tokens = x.reshape(-1, cfg.d_model)
    weights, chosen = route(tokens @ experts.router.T, cfg, experts.expert_bias)
    expected = []
    for t, token in enumerate(tokens):
        total = torch.zeros(cfg.d_model)
        for w, e in zip(weights[t], chosen[t]):
            hidden = F.silu(experts.gate[e] @ token) * (experts.up[e] @ token)
            total += w * (experts.down[e] @ hidden)
        if cfg.shared_experts:
            shared = F.silu(experts.shared_gate.weight @ token) * (experts.shared_up.weight @ token)
            total += experts.shared_down.weight @ shared
        expected.append(total)
    assert torch.allclose(experts(x), torch.stack(expected).view_as(x), atol=1e-5)


def test_partial_rope_turns_the_leading_dimensions_and_leaves_the_rest():
    x = torch.randn(1, 2, 3, 8)
    position = torch.tensor([[0, 1, 2]])
    model = MoELLaDA(LLADA2)
    cos, sin = model.rope_tables(position)
    turned = rope(x, cos, sin)
    assert torch.equal(turned[..., 4:], x[..., 4:])
    inv_freq = 1 / LLADA2.rope_theta ** (torch.arange(0, 4, 2).float() / 4)
    for p in range(3):
        for j in range(2):
            angle = p * inv_freq[j]
            a, b = x[..., p, j], x[..., p, j + 2]
            assert torch.allclose(turned[..., p, j], a * math.cos(angle) - b * math.sin(angle), atol=1e-6)
            assert torch.allclose(turned[..., p, j + 2], b * math.cos(angle) + a * math.sin(angle), atol=1e-6)


def test_block_causal_attention_hides_later_blocks_and_nothing_inside_a_block():
    model = seeded(LLADA2)
    ids = torch.randint(0, 60, (1, 12), generator=torch.Generator().manual_seed(2))
    logits = model(ids)
    later = ids.clone()
    later[0, 9] = (later[0, 9] + 1) % 60  # block 2 (positions 8-11)
    changed = model(later)
    assert torch.allclose(changed[0, :8], logits[0, :8])  # blocks 0 and 1 never see block 2
    assert not torch.allclose(changed[0, 8:], logits[0, 8:])
    same_block = ids.clone()
    same_block[0, 5] = (same_block[0, 5] + 1) % 60  # block 1
    assert not torch.allclose(model(same_block)[0, 4], logits[0, 4])  # position 4 sees position 5
    bidirectional = seeded(MoEConfig(**TINY, rotary_dim=8, router="softmax"))
    assert not torch.allclose(bidirectional(later)[0, :8], bidirectional(ids)[0, :8])


@pytest.mark.parametrize("cfg", [LLADA_MOE, LLADA2], ids=["bidirectional", "block_causal"])
def test_a_left_padded_row_computes_what_it_computes_alone(cfg):
    model = seeded(cfg)
    short = torch.tensor([[5, 6, 7, 8, 9, 10]])
    padded = torch.cat([torch.full((1, 3), cfg.pad_token_id), short], dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    assert torch.allclose(model(padded, mask)[0, 3:], model(short)[0], atol=1e-5)


# LLaDA-MoE from its own checkpoint layout


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    from family_checkpoints import llada_moe_checkpoint

    return llada_moe_checkpoint(tmp_path_factory.mktemp("tiny-llada-moe"), seed=5)


def restated_moe_logits(state: dict, raw: dict, ids: torch.Tensor) -> torch.Tensor:
    """LLaDA-MoE's forward written out from its checkpoint tensors: q/k RMSNorm per head before full half-split RoPE,
    every position attending to every other, and per token the softmax router's top-k experts weighted by their
    probabilities (not renormalised)."""
    d, heads, eps, T = raw["hidden_size"], raw["num_attention_heads"], raw["rms_norm_eps"], ids.shape[0]
    hd, k_top = d // heads, raw["num_experts_per_tok"]

    def rms(v, w):
        return w * (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps))

    inv_freq = 1.0 / raw["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd)
    angles = torch.arange(T).float()[:, None] * inv_freq
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def turn(v):
        return v * cos + torch.cat([-v[..., hd // 2:], v[..., :hd // 2]], -1) * sin

    x = state["model.embed_tokens.weight"][ids]
    for i in range(raw["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, state[p + "input_layernorm.weight"])
        q, k, v = ((h @ state[f"{p}self_attn.{n}_proj.weight"].T).view(T, heads, hd).transpose(0, 1) for n in "qkv")
        q, k = turn(rms(q, state[p + "self_attn.q_norm.weight"])), turn(rms(k, state[p + "self_attn.k_norm.weight"]))
        attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), -1) @ v
        x = x + attention.transpose(0, 1).reshape(T, d) @ state[p + "self_attn.o_proj.weight"].T
        h = rms(x, state[p + "post_attention_layernorm.weight"])
        probabilities = torch.softmax(h @ state[p + "mlp.gate.weight"].T, -1)
        moe = torch.zeros_like(h)
        for t in range(T):
            weights, experts = probabilities[t].topk(k_top)
            for w, e in zip(weights, experts.tolist()):
                expert = f"{p}mlp.experts.{e}."
                hidden = F.silu(state[expert + "gate_proj.weight"] @ h[t]) * (state[expert + "up_proj.weight"] @ h[t])
                moe[t] += w * (state[expert + "down_proj.weight"] @ hidden)
        x = x + moe
    return rms(x, state["model.norm.weight"]) @ state["lm_head.weight"].T


def test_llada_moe_loads_its_real_layout_and_computes_its_restated_math(moe_dir):
    import json

    from safetensors.torch import load_file

    from core.llada.loader import load_llada

    raw = json.loads((moe_dir / "config.json").read_text())
    state = load_file(str(moe_dir / "model.safetensors"))
    assert {"model.layers.1.self_attn.q_norm.weight", "model.layers.0.mlp.gate.weight",
            "model.layers.1.mlp.experts.7.down_proj.weight"} <= set(state)
    model = load_llada(moe_dir, "cpu")
    assert isinstance(model, MoELLaDA) and (model.cfg.n_experts, model.cfg.top_k, model.cfg.router) == (8, 2,
                                                                                                         "softmax")
    ids = torch.randint(0, raw["vocab_size"], (11,), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model(ids[None])[0], restated_moe_logits(state, raw, ids), atol=1e-5, rtol=1e-4)


def test_a_llada_moe_checkpoint_missing_an_expert_or_asking_for_more_is_named(moe_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from core.llada.loader import CheckpointError, load_llada

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((moe_dir / name).read_bytes())
    state = load_file(str(moe_dir / "model.safetensors"))
    del state["model.layers.1.mlp.experts.3.up_proj.weight"]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing 1 tensor\(s\): model\.layers\.1\.mlp\.experts\.3\.up_proj"):
        load_llada(broken, "cpu")
    config = (moe_dir / "config.json").read_text().replace('"shared_expert_intermediate_size": null',
                                                            '"shared_expert_intermediate_size": 64')
    (broken / "config.json").write_text(config)
    with pytest.raises(CheckpointError, match="a shared expert"):
        load_llada(broken, "cpu")


def test_llada_moe_answers_through_llada_s_reference_sampler_and_refuses_the_fast_loop(moe_dir):
    from core.errors import UserError
    from core.generation.generator import LLaDAGenerator
    from core.llada.sampler import PRESETS, SamplerParams
    from core.pipeline.service import default_preset

    generator = LLaDAGenerator(str(moe_dir), "cpu")
    vocab = generator.tokenizer.get_vocab()
    assert (generator.mask_id, generator.eos_id, generator.eot_id) == (vocab["<|mask|>"], vocab["<|endoftext|>"],
                                                                     vocab["<|role_end|>"])
    assert generator.info.kind == "llada-moe" and default_preset(str(moe_dir)) == "llada-moe"
    assert generator.tokenizer.decode(generator.encode_prompt("How many?")) == (
        "<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>How many?<|role_end|>"
        "<role>ASSISTANT</role>")
    out = generator.generate(["Tom has 3 apples.", "Ann has 5 pears and buys 2 more."],
                             SamplerParams(gen_length=16, steps=8, block_length=8), seed=0)
    assert [g.forward_calls for g in out] == [8, 8] and all(len(g.commit_steps) == len(g.token_ids) for g in out)
    with pytest.raises(UserError, match="LLaDA-MoE model; it decodes with LLaDA's reference sampler"):
        generator.generate(["Hi"], PRESETS["gsm8k-fast"][1], seed=0)
    assert PRESETS["llada-moe"][1].problems() == []
