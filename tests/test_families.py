"""The dense diffusion families (core.llada.families): detection from config.json, their checkpoints' names and
shapes, their math restated against the model, Dream's sampler and dParallel's rule on tiny models."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from core.errors import UserError
from core.generation import ar
from core.generation.generator import LLaDAGenerator
from core.llada import dream, families, fast
from core.llada.loader import CheckpointError, load_llada
from core.llada.sampler import PRESETS, SamplerParams, Trace
from family_checkpoints import dream_checkpoint, illada_checkpoint


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory):
    return dream_checkpoint(tmp_path_factory.mktemp("tiny-dream"), seed=3)


@pytest.fixture(scope="module")
def illada_dir(tmp_path_factory):
    return illada_checkpoint(tmp_path_factory.mktemp("tiny-illada"), seed=4)


@pytest.mark.parametrize("raw, family", [
    ({"model_type": "llada", "architectures": ["LLaDAModelLM"], "d_model": 8}, "llada"),
    ({"model_type": "Dream", "architectures": ["DreamModel"]}, "dream"),
    ({"model_type": "illada", "architectures": ["ILLaDAForCausalLM"]}, "illada"),
    ({"model_type": "llada", "architectures": ["LLaDAMoEModelLM"], "hidden_size": 2048}, "llada-moe"),
    ({"model_type": "llada", "num_experts": 64, "hidden_size": 2048}, "llada-moe"),
    ({"model_type": "llada2_moe", "architectures": ["LLaDA2MoeModelLM"]}, "llada2"),
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, None),
])
def test_the_family_comes_from_config_json(raw, family):
    found = families.detect(raw)
    assert (found.name if found else None) == family


@pytest.mark.parametrize("raw, named", [
    ({"model_type": "mmada", "architectures": ["MMadaModelLM"]}, "MMaDA"),
])
def test_a_diffusion_family_we_do_not_run_is_named_with_those_we_do(tmp_path, raw, named):
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert not ar.is_autoregressive(str(tmp_path))  # not handed to transformers as a causal LM
    with pytest.raises(CheckpointError) as refused:
        load_llada(tmp_path, "cpu")
    message = str(refused.value)
    assert named in message and "does not run" in message
    assert all(name in message for name in ("LLaDA-8B-Instruct", "LLaDA-1.5", "dParallel-LLaDA", "iLLaDA", "Dream",
                                            "LLaDA-MoE", "LLaDA2.0-mini", "LLaDA2.1-mini"))
    assert "pip install" not in message


def restated_logits(state: dict, raw: dict, ids: torch.Tensor, shifted: bool) -> torch.Tensor:
    """The forward pass written out from the checkpoint's own tensors: pre-norm Llama blocks with half-split RoPE,
    grouped-query attention with every position attending to every other, q/k/v biases where the checkpoint has
    them; then Dream's shift (row j read from position j - 1, row 0 from itself)."""
    hidden, heads, kv_heads = raw["hidden_size"], raw["num_attention_heads"], raw["num_key_value_heads"]
    hd, eps, T = hidden // heads, raw["rms_norm_eps"], ids.shape[0]

    def rms(v, w):
        return w * (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps))

    def rotate(v):
        return torch.cat([-v[..., hd // 2:], v[..., :hd // 2]], dim=-1)

    inv_freq = 1.0 / raw["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd)
    angles = torch.arange(T).float()[:, None] * inv_freq
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def linear(h, name):
        out = h @ state[name + ".weight"].T
        return out + state[name + ".bias"] if name + ".bias" in state else out

    x = state["model.embed_tokens.weight"][ids]
    for i in range(raw["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, state[p + "input_layernorm.weight"])
        q = linear(h, p + "self_attn.q_proj").view(T, heads, hd).transpose(0, 1)
        k = linear(h, p + "self_attn.k_proj").view(T, kv_heads, hd).transpose(0, 1)
        v = linear(h, p + "self_attn.v_proj").view(T, kv_heads, hd).transpose(0, 1)
        q, k = q * cos + rotate(q) * sin, k * cos + rotate(k) * sin
        k, v = (t.repeat_interleave(heads // kv_heads, dim=0) for t in (k, v))
        attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1) @ v
        x = x + attention.transpose(0, 1).reshape(T, hidden) @ state[p + "self_attn.o_proj.weight"].T
        h = rms(x, state[p + "post_attention_layernorm.weight"])
        x = x + (F.silu(linear(h, p + "mlp.gate_proj")) * linear(h, p + "mlp.up_proj")) @ state[
            p + "mlp.down_proj.weight"].T
    head = state.get("lm_head.weight", state["model.embed_tokens.weight"])
    logits = rms(x, state["model.norm.weight"]) @ head.T
    return torch.cat([logits[:1], logits[:-1]]) if shifted else logits


@pytest.mark.parametrize("which", ["dream", "illada"])
def test_each_family_loads_its_real_layout_and_computes_its_restated_math(which, dream_dir, illada_dir):
    folder = {"dream": dream_dir, "illada": illada_dir}[which]
    raw = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    if which == "dream":
        assert {"model.layers.1.self_attn.q_proj.bias", "lm_head.weight"} <= set(state)
        assert "model.layers.0.self_attn.o_proj.bias" not in state
    else:
        assert "lm_head.weight" not in state  # tied to the embedding
    model = load_llada(folder, "cpu")
    cfg = model.cfg
    assert (cfg.n_kv_heads, cfg.qkv_bias, cfg.shifted_prediction, cfg.weight_tying) == (
        (2, True, True, False) if which == "dream" else (2, False, False, True))
    assert cfg.mask_token_id == raw["mask_token_id"] and cfg.eos_token_id == raw["eos_token_id"]
    assert cfg.max_sequence_length == (2048 if which == "dream" else 8192)
    ids = torch.randint(0, raw["vocab_size"], (13,), generator=torch.Generator().manual_seed(0))
    expected = restated_logits(state, raw, ids, shifted=which == "dream")
    assert torch.allclose(model(ids[None])[0], expected, atol=1e-5, rtol=1e-4)


def test_a_checkpoints_wrong_names_and_shapes_are_named_in_its_own_terms(dream_dir, tmp_path):
    state = load_file(str(dream_dir / "model.safetensors"))
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((dream_dir / name).read_bytes())
    missing = {k: v for k, v in state.items() if k != "model.layers.1.self_attn.k_proj.bias"}
    save_file(missing | {"model.layers.0.self_attn.o_proj.bias": torch.zeros(64)}, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError) as refused:
        load_llada(broken, "cpu")
    assert "does not match the Dream config" in str(refused.value)
    assert "missing 1 tensor(s): model.layers.1.self_attn.k_proj.bias" in str(refused.value)
    assert "unexpected 1 tensor(s): model.layers.0.self_attn.o_proj.bias" in str(refused.value)
    save_file(state | {"model.norm.weight": torch.ones(32)}, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight .* has shape \(32,\), the config needs \(64,\)"):
        load_llada(broken, "cpu")


def test_each_family_uses_its_own_special_tokens(dream_dir, illada_dir):
    dreamer, illada = LLaDAGenerator(str(dream_dir), "cpu"), LLaDAGenerator(str(illada_dir), "cpu")
    vocab = dreamer.tokenizer.get_vocab()
    assert (dreamer.mask_id, dreamer.eos_id, dreamer.eot_id) == (vocab["<|mask|>"], vocab["<|endoftext|>"],
                                                               vocab["<|im_end|>"])
    assert (illada.mask_id, illada.eos_id, illada.eot_id) == (5, 2, 2)
    assert dreamer.info.kind == "dream" and illada.info.kind == "illada"
    prompt = dreamer.tokenizer.decode(dreamer.encode_prompt("How many?"))
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")


def test_dream_decodes_with_its_own_sampler_and_the_llada_families_with_llada_s(dream_dir, illada_dir):
    dreamer, illada = LLaDAGenerator(str(dream_dir), "cpu"), LLaDAGenerator(str(illada_dir), "cpu")
    with pytest.raises(UserError, match="Dream model; it decodes with its own sampler"):
        dreamer.generate(["Hi"], PRESETS["small"][1], seed=0)
    with pytest.raises(UserError, match="iLLaDA model; it decodes with LLaDA's sampler"):
        illada.generate(["Hi"], PRESETS["dream-greedy"][1], seed=0)
    greedy = SamplerParams(gen_length=16, steps=8, block_length=16, mode="dream", alg="entropy")
    out = dreamer.generate(["Tom has 3 apples.", "Ann has 5 pears and buys 2 more."], greedy, seed=0)
    assert all(g.forward_calls == 8 for g in out) and all(len(g.commit_steps) == len(g.token_ids) for g in out)


def test_every_preset_is_valid_and_the_published_ones_say_what_their_papers_used():
    for name, (_, params) in PRESETS.items():
        assert params.problems() == [], name
    llada15 = PRESETS["llada15-gsm8k"][1]
    assert (llada15.gen_length, llada15.block_length, llada15.steps, llada15.confidence_eos_eot_inf) == (
        256, 16, 256, True)
    dparallel = PRESETS["dparallel"][1]
    assert (dparallel.block_length, dparallel.entropy_threshold, dparallel.mode) == (32, 0.5, "fast")
    dream_gsm8k = PRESETS["dream-gsm8k"][1]
    assert (dream_gsm8k.alg, dream_gsm8k.temperature, dream_gsm8k.top_p, dream_gsm8k.steps) == (
        "entropy", 0.1, 0.9, 256)
    assert all(PRESETS[p][1].mode == "dream" for p in families.DREAM.presets)
    assert all(PRESETS[p][1].mode in f.modes for f in families.FAMILIES.values() for p in f.presets)


@pytest.mark.parametrize("params, message", [
    (SamplerParams(mode="dream", alg="fastest"), "alg must be one of origin, maskgit_plus, topk_margin, entropy"),
    (SamplerParams(gen_length=64, steps=64, block_length=8, mode="dream"), "block_length must equal gen_length"),
    (SamplerParams(top_p=0.9), "top_p belong to Dream's sampler"),
    (SamplerParams(mode="dream", block_length=128, top_p=0), "top_p must be in (0, 1]"),
    (SamplerParams(mode="fast", entropy_threshold=0.5, threshold=0.9), "ranks by entropy alone"),
    (SamplerParams(entropy_threshold=0.5), "need mode 'fast'"),
])
def test_sampler_settings_of_the_wrong_kind_are_refused_with_a_message(params, message):
    assert any(message in problem for problem in params.problems())


# Dream's sampler, restated on the tiny Dream model


def run_dream(model, prompt, gen_length, **options):
    """The logits of the first step's canvas, the canvas after each of 4 steps, and the final one."""
    mask_id = model.cfg.mask_token_id
    logits = model(torch.cat([prompt, torch.full((prompt.shape[0], gen_length), mask_id)], dim=1))
    snapshots = []
    final = dream.generate(model, prompt, steps=4, gen_length=gen_length, mask_id=mask_id,
                           on_step=lambda step, total, x: snapshots.append(x.clone()), **options)
    return logits, snapshots, final


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
def test_a_confidence_rule_commits_the_share_of_masks_it_ranks_first(dream_dir, alg):
    model = load_llada(dream_dir, "cpu")
    mask_id = model.cfg.mask_token_id
    prompt = torch.tensor([[11, 42, 97, 5, 63]])
    logits, snapshots, final = run_dream(model, prompt, 32, alg=alg)
    after_first = snapshots[0]
    answer = logits[0, 5:].float().softmax(-1)
    confidence = {"maskgit_plus": answer.max(-1).values,
                  "topk_margin": answer.topk(2).values[:, 0] - answer.topk(2).values[:, 1],
                  "entropy": (answer * torch.log(answer + 1e-10)).sum(-1)}[alg]
    n = int(32 * (1 - 0.75025))  # timesteps linspace(1, 0.001, 5): the first step keeps s/t of the masks
    committed = (after_first[0, 5:] != mask_id).nonzero().flatten()
    assert set(committed.tolist()) == set(confidence.topk(n).indices.tolist())
    assert torch.equal(after_first[0, 5:][committed], answer.argmax(-1)[committed])
    assert (final[0, 5:] != mask_id).all() and torch.equal(final[0, :5], prompt[0])  # all filled, prompt kept
    # int(masks * (1 - s/t)) a step over timesteps 1, .75025, .5005, .25075, .001: 7 of 32, 8 of 25, 8 of 17, 9
    assert [int((s[0, 5:] != mask_id).sum()) for s in snapshots] == [7, 15, 23, 32]


def test_origin_commits_each_mask_with_probability_one_minus_s_over_t(dream_dir):
    model = load_llada(dream_dir, "cpu")
    mask_id = model.cfg.mask_token_id
    prompt = torch.tensor([[11, 42, 97]]).repeat(16, 1)
    _, snapshots, _ = run_dream(model, prompt, 64, alg="origin", rng=torch.Generator().manual_seed(5))
    share = (snapshots[0][:, 3:] != mask_id).float().mean().item()
    expected = 1 - 0.75025  # p = 1 - s/t at the first of 4 steps
    assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / (16 * 64))
    assert (snapshots[-1][:, 3:] != mask_id).all()  # the last step commits every mask left


def test_dream_sampling_is_seeded_and_a_batch_gives_what_each_prompt_gives_alone(dream_dir):
    model = load_llada(dream_dir, "cpu")
    mask_id = model.cfg.mask_token_id
    sampled = dict(steps=8, gen_length=16, mask_id=mask_id, alg="entropy", temperature=0.7, top_p=0.9, top_k=20,
                   alg_temp=0.5)
    a = dream.generate(model, torch.tensor([[3, 4, 5]]), rng=torch.Generator().manual_seed(1), **sampled)
    b = dream.generate(model, torch.tensor([[3, 4, 5]]), rng=torch.Generator().manual_seed(1), **sampled)
    c = dream.generate(model, torch.tensor([[3, 4, 5]]), rng=torch.Generator().manual_seed(2), **sampled)
    assert torch.equal(a, b) and not torch.equal(a, c)

    short, long = [7, 8, 9], [20, 21, 22, 23, 24, 25]
    greedy = dict(steps=8, gen_length=16, mask_id=mask_id, alg="topk_margin")
    batch = dream.generate(model, torch.tensor([[0, 0, 0] + short, long]),
                           torch.tensor([[0, 0, 0, 1, 1, 1], [1] * 6]), **greedy)
    for row, prompt in enumerate((short, long)):
        alone = dream.generate(model, torch.tensor([prompt]), **greedy)
        assert torch.equal(batch[row, 6:], alone[0, len(prompt):])


def test_top_p_and_top_k_keep_the_tokens_they_say():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = dream.filter_logits(logits, top_p=0.7, top_k=0) > torch.finfo(logits.dtype).min
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7: the token crossing 0.7 stays
    kept = dream.filter_logits(logits, top_p=1.0, top_k=3) > torch.finfo(logits.dtype).min
    assert kept.tolist() == [[True, True, True, False]]


def test_a_dream_trace_records_the_step_and_probability_of_every_token(dream_dir):
    model = load_llada(dream_dir, "cpu")
    prompt = torch.tensor([[11, 42, 97]])
    trace = Trace(torch.ones(1, 3 + 16, dtype=torch.long), 16)
    dream.generate(model, prompt, steps=4, gen_length=16, mask_id=model.cfg.mask_token_id, alg="maskgit_plus",
                   trace=trace)
    assert sorted(trace.commit_step[0].tolist()) == [1] * 3 + [2] * 4 + [3] * 4 + [4] * 5  # 16 masks over 4 steps
    assert trace.forward_calls == 4 and ((trace.commit_prob > 0) & (trace.commit_prob <= 1)).all()


# dParallel's rule


def test_the_entropy_rule_commits_every_mask_at_most_the_threshold_and_at_least_the_lowest():
    sure, unsure = [9.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    logits = torch.tensor([[sure, unsure, sure, sure], [unsure, unsure, unsure, unsure]])
    masked = torch.tensor([[True, True, True, False], [True, True, False, True]])
    chosen = fast.low_entropy(logits, masked, threshold=0.5)
    assert chosen.tolist() == [[True, False, True, False], [True, False, False, False]]  # ties: the first


def test_dparallel_decoding_takes_as_many_passes_as_its_threshold_allows(tiny_checkpoint):
    model = load_llada(tiny_checkpoint, "cpu")
    prompt = torch.tensor([[5, 6, 7, 8]])
    common = dict(steps=16, gen_length=16, block_length=8, mask_id=model.cfg.mask_token_id, cuda_graph=False)
    everything = fast.generate(model, prompt, entropy_threshold=1e6, **common)
    one_by_one = fast.generate(model, prompt, entropy_threshold=1e-12, **common)
    assert everything.forward_calls == 2 and one_by_one.forward_calls == 16  # a block a pass; a token a pass
    assert (everything.canvas[0, 4:] != model.cfg.mask_token_id).all()


# Through the pages and experiments: two families side by side

PAGES = __import__("pathlib").Path(__file__).resolve().parents[1] / "pages"


def wait_until_done(db_url, experiment_id, timeout=300):
    import time

    from db.queries import experiment_states
    from db.session import session_scope

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(db_url) as session:
            state = experiment_states(session, [experiment_id])[experiment_id]
        if state["status"] in ("done", "failed"):
            return state
        time.sleep(0.5)
    raise AssertionError(f"experiment {experiment_id} did not finish: {state}")


def test_the_playground_shows_a_dream_model_s_card_and_runs_its_own_sampler(dream_dir, db_url, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.pipeline.worker import job_state
    from pages.shared import load_view
    from test_pages import wait_for_job

    monkeypatch.setenv("COMPRESSLENS_MODEL", str(dream_dir))
    at = AppTest.from_file(str(PAGES / "playground.py"), default_timeout=120)
    at.run()
    assert [e.label for e in at.expander if e.label.startswith("Model card")] == ["Model card: Dream"]
    card = next(e for e in at.expander if e.label == "Model card: Dream")
    fast_modes = next(m.value for m in card.markdown if m.value.startswith("**Fast modes:**")).splitlines()[1:]
    assert len(fast_modes) == 7 and all(": does not apply" in line for line in fast_modes)
    assert any(s.label == "alg" for s in at.selectbox)  # Dream's own parameters, not LLaDA's fast modes
    assert not any(s.label == "cache (approximate)" for s in at.selectbox)
    preset = next(s for s in at.selectbox if s.label == "Sampler preset")
    assert preset.value == "dream-gsm8k"
    preset.set_value("dream-greedy")
    at.text_area(key="prompt").input("Tom has 3 apples and buys 5 more. How many apples does he have?")
    at.run()
    next(b for b in at.button if b.label == "Run").click()
    at.run()
    assert not at.exception and not at.error, at.error
    state = wait_for_job(db_url, at.session_state["job_id"])
    assert state["status"] == "done", job_state(db_url, at.session_state["job_id"])
    view = load_view(state["run_id"])
    assert view["sampler"]["mode"] == "dream" and view["sampler"]["alg"] == "entropy"


def test_an_experiment_runs_two_families_on_the_same_compressed_prompts(tiny_checkpoint, dream_dir, db_url,
                                                                      monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.evaluation import analysis

    monkeypatch.setenv("COMPRESSLENS_MODEL", str(tiny_checkpoint))
    at = AppTest.from_file(str(PAGES / "experiments.py"), default_timeout=120)
    at.run()
    at.text_input[0].input("two families")
    at.text_input[1].input("2")
    at.number_input[0].set_value(2)
    at.text_area[0].input(f"{tiny_checkpoint}\n{dream_dir}")
    at.run()
    assert [e.label for e in at.expander if e.label.startswith("Model card")] == ["Model card: LLaDA",
                                                                                 "Model card: Dream"]
    next(n for n in at.number_input if n.label == "Generation length: math").set_value(32)
    at.run()
    next(b for b in at.button if b.label.startswith("Queue")).click()
    at.run()
    assert not at.exception and at.success[0].value == "Experiment #1 queued.", at.error
    assert wait_until_done(db_url, 1)["status"] == "done"

    frame = analysis.outputs_frame(db_url, 1)
    assert set(frame["model"]) == {str(tiny_checkpoint), str(dream_dir)}
    compressed = frame[frame["condition"] == "compressed"]
    prompts = compressed.pivot(index="source_id", columns="model", values="prompt")
    assert len(prompts) == 2 and (prompts[str(tiny_checkpoint)] == prompts[str(dream_dir)]).all()  # compressed once
    samplers = compressed.groupby("model")["sampler"].first()
    assert samplers[str(dream_dir)] == "Dream, entropy, top-p 0.9" and samplers[str(tiny_checkpoint)] == "reference"
    comparison = analysis.model_comparison(frame)
    assert {"original", "compressed"} <= set(comparison["condition"]) and (comparison["n"] == 2).all()


def test_the_command_line_runs_a_dream_checkpoint_on_its_paper_s_sampler(dream_dir, db_url, capsys):
    from core.__main__ import main

    code = main(["compare", "--model", str(dream_dir), "--prompt", "Tom has 3 apples and buys 5 more. How many?",
                 "--compressor", "random", "--ratio", "1.5", "--preset", "dream-greedy", "--db", db_url, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    view = json.loads(out.out)
    assert view["sampler"]["mode"] == "dream" and view["model"]["kind"] == "dream"
    assert main(["compare", "--model", str(dream_dir), "--prompt", "Hi", "--compressor", "random", "--preset", "gsm8k",
                 "--db", db_url]) == 2
    assert "Dream model; it decodes with its own sampler" in capsys.readouterr().err
