import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.generation.demo import build_tiny_checkpoint
from core.llada.loader import INDEX_FILE, CheckpointError, load_llada, read_config, resolve_model_dir
from core.llada.model import LLaDA, LLaDAConfig, init_weights


def test_loads_sharded_checkpoint_with_every_tensor(tiny_checkpoint):
    index = json.loads((tiny_checkpoint / INDEX_FILE).read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1
    model = load_llada(tiny_checkpoint, "cpu")
    saved = {}
    for shard in shards:
        saved.update(load_file(str(tiny_checkpoint / shard)))
    state = model.state_dict()
    assert set(saved) == set(state)
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    assert model.model.transformer.wte.weight.dtype == torch.float32
    assert "model.transformer.blocks.0.q_proj.weight" in state


def _copy_checkpoint(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_shard(ckpt, key, change):
    index = json.loads((ckpt / INDEX_FILE).read_text())
    shard = ckpt / index["weight_map"][key]
    tensors = load_file(str(shard))
    change(tensors, index)
    save_file(tensors, str(shard))
    (ckpt / INDEX_FILE).write_text(json.dumps(index))


def test_missing_tensor_is_named(tiny_checkpoint, tmp_path):
    ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    key = "model.transformer.blocks.1.up_proj.weight"

    def drop(tensors, index):
        del tensors[key]
        del index["weight_map"][key]

    _edit_shard(ckpt, key, drop)
    with pytest.raises(CheckpointError, match=r"missing 1 tensor\(s\): model\.transformer\.blocks\.1\.up_proj\.weight"):
        load_llada(ckpt, "cpu")


def test_misshaped_tensor_is_named_with_both_shapes(tiny_checkpoint, tmp_path):
    ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    key = "model.transformer.blocks.0.k_proj.weight"

    def reshape(tensors, _index):
        tensors[key] = torch.zeros(3, 5)

    _edit_shard(ckpt, key, reshape)
    with pytest.raises(CheckpointError, match=r"k_proj\.weight .* shape \(3, 5\), the config needs \(64, 64\)"):
        load_llada(ckpt, "cpu")


def test_corrupt_shard_and_missing_files_fail_clearly(tiny_checkpoint, tmp_path):
    ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "corrupt")
    shard = sorted(ckpt.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_llada(ckpt, "cpu")

    gone = _copy_checkpoint(tiny_checkpoint, tmp_path / "gone")
    sorted(gone.glob("model-*.safetensors"))[-1].unlink()
    with pytest.raises(CheckpointError, match="lacks shard file"):
        load_llada(gone, "cpu")

    (tmp_path / "noconfig").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        read_config(tmp_path / "noconfig")
    with pytest.raises(CheckpointError, match="Model directory not found"):
        resolve_model_dir(str(tmp_path / "does-not-exist"))


def test_hub_id_offline_names_where_to_put_it():
    with pytest.raises(CheckpointError) as info:
        resolve_model_dir("GSAI-ML/LLaDA-8B-Instruct")
    message = str(info.value)
    assert "not downloaded" in message and "offline" in message
    assert "models--GSAI-ML--LLaDA-8B-Instruct" in message


@pytest.mark.parametrize("n_kv_heads,tied", [(2, False), (4, True), (1, True)])
def test_gqa_and_tied_variants_load_and_run(tmp_path, n_kv_heads, tied):
    ckpt = build_tiny_checkpoint(tmp_path / "v", n_heads=4, n_kv_heads=n_kv_heads, weight_tying=tied, seed=3)
    model = load_llada(ckpt, "cpu")
    state = model.state_dict()
    assert state["model.transformer.blocks.0.k_proj.weight"].shape == (n_kv_heads * 16, 64)
    assert ("model.transformer.ff_out.weight" in state) is (not tied)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 7))
    logits = model(ids)
    assert logits.shape == (2, 7, model.cfg.embedding_size)
    assert torch.allclose(logits, reference_forward(model, ids), atol=1e-4, rtol=1e-4)


def reference_forward(model: LLaDA, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """LLaDA's forward restated plainly: loops over heads, explicit softmax, RoPE as complex rotation."""
    cfg = model.cfg
    sd = {k: v.double() for k, v in model.state_dict().items()}
    B, T = ids.shape
    hd = cfg.head_dim
    groups = cfg.n_heads // cfg.n_kv_heads

    def rms(x, w):
        return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.rms_norm_eps))

    def rope(v, pos):  # v: (T, hd); pairs (i, i + hd/2) rotate by pos * theta^(-2i/hd)
        half = hd // 2
        freqs = torch.tensor([cfg.rope_theta ** (-2 * i / hd) for i in range(half)], dtype=torch.float64)
        z = torch.complex(v[:, :half], v[:, half:]) * torch.polar(torch.ones(T, half, dtype=torch.float64),
                                                                   pos[:, None].double() * freqs)
        return torch.cat([z.real, z.imag], dim=-1)

    out = []
    for b in range(B):
        real = torch.ones(T, dtype=torch.bool) if attention_mask is None else attention_mask[b].bool()
        pos = torch.cumsum(real.long(), 0) - 1
        pos = pos.clamp(min=0)
        x = sd["model.transformer.wte.weight"][ids[b]]
        for i in range(cfg.n_layers):
            p = f"model.transformer.blocks.{i}."
            h = rms(x, sd[p + "attn_norm.weight"])
            q, k, v = h @ sd[p + "q_proj.weight"].T, h @ sd[p + "k_proj.weight"].T, h @ sd[p + "v_proj.weight"].T
            heads = []
            for head in range(cfg.n_heads):
                kv = head // groups
                qh = rope(q[:, head * hd:(head + 1) * hd], pos)
                kh = rope(k[:, kv * hd:(kv + 1) * hd], pos)
                vh = v[:, kv * hd:(kv + 1) * hd]
                scores = qh @ kh.T / math.sqrt(hd)
                scores[:, ~real] = -math.inf  # bidirectional: only padding is hidden
                heads.append(torch.softmax(scores, -1) @ vh)
            x = x + torch.cat(heads, -1) @ sd[p + "attn_out.weight"].T
            h = rms(x, sd[p + "ff_norm.weight"])
            gate, up = h @ sd[p + "ff_proj.weight"].T, h @ sd[p + "up_proj.weight"].T
            x = x + (gate * torch.sigmoid(gate) * up) @ sd[p + "ff_out.weight"].T
        x = rms(x, sd["model.transformer.ln_f.weight"])
        head = sd["model.transformer.wte.weight"] if cfg.weight_tying else sd["model.transformer.ff_out.weight"]
        out.append(x @ head.T)
    return torch.stack(out).float()


def test_forward_matches_the_math_restated(tiny_checkpoint):
    model = load_llada(tiny_checkpoint, "cpu")
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model(ids), reference_forward(model, ids), atol=1e-4, rtol=1e-4)


def test_left_padding_is_invisible_to_real_tokens(tiny_checkpoint):
    model = load_llada(tiny_checkpoint, "cpu")
    ids = torch.randint(0, model.cfg.vocab_size, (1, 6), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([torch.full((1, 3), model.cfg.eos_token_id), ids], dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    alone = model(ids)
    in_batch = model(padded, attention_mask=mask)[:, 3:]
    assert torch.allclose(alone, in_batch, atol=1e-5)
    assert torch.allclose(model(padded, attention_mask=mask), reference_forward(model, padded, mask), atol=1e-4, rtol=1e-4)


def test_attention_is_bidirectional(tiny_checkpoint):
    model = load_llada(tiny_checkpoint, "cpu")
    ids = torch.randint(0, model.cfg.vocab_size, (1, 8), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % model.cfg.vocab_size
    # Changing the last token changes the first position's logits: no causal mask.
    assert not torch.allclose(model(ids)[0, 0], model(changed)[0, 0])


def test_config_reads_llada_keys_and_defaults_kv_heads():
    cfg = LLaDAConfig.from_dict({"d_model": 4096, "n_heads": 32, "n_kv_heads": None, "n_layers": 32,
                                 "mlp_hidden_size": 12288, "vocab_size": 126464, "rope_theta": 500000.0,
                                 "block_type": "llama", "weight_tying": False})
    assert cfg.n_kv_heads == 32 and cfg.embedding_size == 126464 and cfg.head_dim == 128
    with torch.device("meta"):
        model = LLaDA(cfg)
    assert len(model.state_dict()) == 291
    assert 8.0e9 < model.num_parameters() < 8.05e9


def test_init_is_seeded():
    cfg = LLaDAConfig(d_model=32, n_heads=2, n_layers=1, mlp_hidden_size=64, vocab_size=50, embedding_size=50)
    a, b = LLaDA(cfg), LLaDA(cfg)
    init_weights(a, 5)
    init_weights(b, 5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_shifted_prediction_reads_each_position_from_its_predecessor(tmp_path):
    """Dream's rule: the state at i predicts token i + 1, so row j of the logits is row j - 1 of the
    unshifted model (row 0, with no predecessor, reads itself), padding or not."""
    ckpt = build_tiny_checkpoint(tmp_path / "s", n_heads=4, n_kv_heads=2, weight_tying=True,
                                 shifted_prediction=True, seed=6)
    shifted = load_llada(ckpt, "cpu")
    assert shifted.cfg.shifted_prediction
    ids = torch.randint(0, shifted.cfg.vocab_size, (2, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    unshifted = reference_forward(shifted, ids, mask)
    expected = torch.cat([unshifted[:, :1], unshifted[:, :-1]], dim=1)
    assert torch.allclose(shifted(ids, attention_mask=mask), expected, atol=1e-4, rtol=1e-4)
