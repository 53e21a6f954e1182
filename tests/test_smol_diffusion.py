"""The SmolLM2 diffusion model: its GGUF base, the adapter on top, the loader's refusals, and the model itself."""

import importlib.util
import json
import operator
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from core import paths
from core.errors import UserError
from core.generation import smol_diffusion
from core.llada.gguf_llama import GGUF, read_llama_gguf, unpermute
from core.llada.loader import CheckpointError, load_llada, load_tokenizer
from core.llada.tokenizer import chat_prompt

ROOT = Path(__file__).resolve().parents[1]
HAND_WRITTEN = ("freeform_math.jsonl", "freeform_math_2.jsonl")  # bench/data's free-form problem sets
D, LAYERS, HEADS, KV_HEADS, FFN, VOCAB = 64, 2, 4, 2, 128, 96


def hand_written(name: str) -> list[dict]:
    return [json.loads(line) for line in (ROOT / "bench" / "data" / name).read_text().splitlines()]


def permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's converter: half-split rotary rows into its interleaved layout."""
    rows, cols = weight.shape
    return weight.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def write_tiny_llama_gguf(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A two-layer Llama GGUF in every tensor type we read; returns the weights as LLaDA holds them
    (dequantised by the gguf package, query/key rows in the half-split layout)."""
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFWriter
    from gguf.quants import dequantize, quantize

    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(D)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(VOCAB)
    expected = {}
    kv = D // HEADS * KV_HEADS
    shapes = {"attn_q": (D, D), "attn_k": (kv, D), "attn_v": (kv, D), "attn_output": (D, D),
              "ffn_gate": (FFN, D), "ffn_up": (FFN, D), "ffn_down": (D, FFN)}
    kinds = [Q.Q4_1, Q.Q4_0, Q.Q8_0, Q.F16]
    names = {"attn_q": "q_proj", "attn_k": "k_proj", "attn_v": "v_proj", "attn_output": "attn_out",
             "ffn_gate": "ff_proj", "ffn_up": "up_proj", "ffn_down": "ff_out"}

    def add(name: str, key: str, weight: np.ndarray, kind, heads: int | None = None):
        stored = permute(weight, heads) if heads else weight
        if kind == Q.F32:
            writer.add_tensor(name, stored.astype(np.float32))
            back = stored.astype(np.float32)
        elif kind == Q.F16:
            writer.add_tensor(name, stored.astype(np.float16))
            back = stored.astype(np.float16).astype(np.float32)
        else:
            raw = quantize(stored.astype(np.float32), kind)
            writer.add_tensor(name, raw, raw_dtype=kind)
            back = dequantize(raw, kind).reshape(stored.shape)
        expected[key] = unpermute(torch.from_numpy(back.copy()), heads).numpy() if heads else back

    add("token_embd.weight", "model.transformer.wte.weight", rng.normal(0, 0.5, (VOCAB, D)), Q.Q8_0)
    for i in range(LAYERS):
        prefix = f"model.transformer.blocks.{i}."
        add(f"blk.{i}.attn_norm.weight", prefix + "attn_norm.weight", 1 + rng.normal(0, 0.1, D), Q.F32)
        add(f"blk.{i}.ffn_norm.weight", prefix + "ff_norm.weight", 1 + rng.normal(0, 0.1, D), Q.F32)
        for j, (name, shape) in enumerate(shapes.items()):
            heads = HEADS if name == "attn_q" else KV_HEADS if name == "attn_k" else None
            add(f"blk.{i}.{name}.weight", prefix + names[name] + ".weight", rng.normal(0, 0.2, shape),
                kinds[(i + j) % len(kinds)], heads)
    add("output_norm.weight", "model.transformer.ln_f.weight", 1 + rng.normal(0, 0.1, D), Q.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


@pytest.fixture
def base_package(tmp_path, monkeypatch):
    """A package named like a real one that carries a tiny Llama GGUF, importable from sys.path."""
    site = tmp_path / "site"
    package = site / "tiny_llama_base"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    expected = write_tiny_llama_gguf(package / "tiny.gguf")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return package / "tiny.gguf", expected


def model_folder(path: Path, gguf: Path, adapter: dict[str, torch.Tensor], *, package: str = "tiny-llama-base",
                 rank: int = 4, alpha: float = 8.0, checksum: str | None = None) -> Path:
    from core.llada.gguf_llama import gguf_config

    path.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "llada", **gguf_config(GGUF(gguf)), "mask_token_id": 5, "eos_token_id": 0,
              "pad_token_id": 0, "eot_token_id": 2, "shifted_prediction": True,
              "base": {"package": package, "file": gguf.name, "sha256": checksum or paths.sha256(gguf)},
              "adapter": {"file": "adapter.safetensors", "rank": rank, "alpha": alpha}}
    (path / "config.json").write_text(json.dumps(config))
    save_file(adapter, str(path / "adapter.safetensors"))
    return path


def test_the_gguf_reader_dequantises_every_type_as_the_gguf_package_does(base_package):
    gguf, expected = base_package
    config, state = read_llama_gguf(gguf)
    assert config["n_heads"] == HEADS and config["n_kv_heads"] == KV_HEADS and config["weight_tying"]
    assert config["d_model"] == D and config["n_layers"] == LAYERS and config["vocab_size"] == VOCAB
    assert set(state) == set(expected)
    for key, weight in expected.items():
        assert torch.equal(state[key], torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))), key


def test_query_and_key_rows_are_permuted_back_as_transformers_does():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    weight = np.random.default_rng(1).normal(size=(12, 5)).astype(np.float32)
    ours = unpermute(torch.from_numpy(weight), 3).numpy()
    theirs = LlamaTensorProcessor(config={})._reverse_permute_weights(weight, 3, 3)
    assert np.array_equal(ours, theirs)
    assert np.array_equal(unpermute(torch.from_numpy(permute(weight, 3)), 3).numpy(), weight)


def test_the_packaged_smollm2_reads_exactly_as_the_gguf_package_reads_it():
    from gguf import GGUFReader
    from gguf.quants import dequantize

    path = paths.package_file(smol_diffusion.BASE_PACKAGE, smol_diffusion.BASE_FILE)
    ours = GGUF(path)
    theirs = {t.name: t for t in GGUFReader(str(path)).tensors}
    assert len(ours.tensors) == len(theirs) == 272
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"):
        tensor = theirs[name]
        reference = dequantize(tensor.data, tensor.tensor_type).astype(np.float32).reshape(ours.tensors[name][1])
        assert torch.equal(ours.tensor(name), torch.from_numpy(reference)), name


def test_a_base_package_plus_an_adapter_loads_as_base_plus_the_low_rank_update(base_package, tmp_path):
    gguf, expected = base_package
    g = torch.Generator().manual_seed(0)
    key = "model.transformer.blocks.1.q_proj.weight"
    A, B = torch.randn(4, D, generator=g), torch.randn(D, 4, generator=g)
    norm = torch.rand(D, generator=g)
    mask_row = torch.randn(1, D, generator=g)
    folder = model_folder(tmp_path / "m", gguf, {
        key + ".lora_A": A, key + ".lora_B": B, "model.transformer.blocks.0.ff_norm.weight": norm,
        "model.transformer.wte.weight.rows": mask_row, "model.transformer.wte.weight.row_index": torch.tensor([5])})
    model = load_llada(folder, "cpu")
    state = model.state_dict()
    torch.testing.assert_close(state[key], torch.from_numpy(expected[key]) + 2.0 * B @ A)
    assert torch.equal(state["model.transformer.blocks.0.ff_norm.weight"], norm)
    assert torch.equal(state["model.transformer.wte.weight"][5], mask_row[0])
    assert torch.equal(state["model.transformer.wte.weight"][4], torch.from_numpy(expected["model.transformer.wte.weight"][4]))
    untouched = "model.transformer.blocks.0.ff_out.weight"
    assert torch.equal(state[untouched], torch.from_numpy(np.ascontiguousarray(expected[untouched], dtype=np.float32)))
    assert model.cfg.shifted_prediction and model.cfg.weight_tying and model.cfg.mask_token_id == 5


def test_a_missing_base_package_is_named_with_the_command_that_installs_it(base_package, tmp_path):
    gguf, _ = base_package
    folder = model_folder(tmp_path / "m", gguf, {}, package="no-such-base-package")
    with pytest.raises(UserError, match=r"no-such-base-package.*not installed.*scripts/setup.sh"):
        load_llada(folder, "cpu")


def test_an_adapter_of_another_model_is_refused_with_a_message(base_package, tmp_path):
    gguf, _ = base_package
    key = "model.transformer.blocks.0.k_proj.weight"
    wrong = model_folder(tmp_path / "wrong", gguf, {key + ".lora_A": torch.zeros(4, D + 8), key + ".lora_B": torch.zeros(32, 4)})
    with pytest.raises(CheckpointError, match="belongs to another model"):
        load_llada(wrong, "cpu")
    foreign = model_folder(tmp_path / "foreign", gguf, {"model.transformer.blocks.7.q_proj.weight.lora_A": torch.zeros(4, D),
                                                        "model.transformer.blocks.7.q_proj.weight.lora_B": torch.zeros(D, 4)})
    with pytest.raises(CheckpointError, match="matches no tensor of the base model"):
        load_llada(foreign, "cpu")
    changed = model_folder(tmp_path / "changed", gguf, {}, checksum="0" * 64)
    with pytest.raises(CheckpointError, match="another version of tiny.gguf"):
        load_llada(changed, "cpu")


def training_script():
    spec = importlib.util.spec_from_file_location("train_smol", ROOT / "scripts" / "train_smol_diffusion.py")
    train = importlib.util.module_from_spec(spec)
    sys.modules["train_smol"] = train
    spec.loader.exec_module(train)
    return train


def test_training_rows_are_the_tokenizer_chat_template_and_answers_end_with_the_turn_token():
    train = training_script()
    tokenizer = load_tokenizer(smol_diffusion.SMOL_DIR)
    for content in ("Tom has 3 apples and buys 5 more. How many apples does he have?", "  Summarize:\n\nA story. "):
        assert train.smol_diffusion_chat(content) == chat_prompt(tokenizer, content)
    rows = train.Rows(tokenizer, {"wordproblems": [("Add 2 and 3.", "2+3=5\n#### 5")], "whole_text": ["A sentence."]}, 0)
    (length, [(ids, start)]), = rows.buckets["wordproblems"].items()
    assert tokenizer.decode(ids[start:]) == "2+3=5\n#### 5<|im_end|>" and length % train.ROUND == 0
    assert length >= len(ids) + 8
    (_, [(text_ids, text_start)]), = rows.buckets["whole_text"].items()
    assert text_ids[0] == tokenizer.convert_tokens_to_ids(smol_diffusion.EOS_TOKEN) and text_start == 1
    assert train.gsm8k_chain("He has 2*3=<<2*3=6>>6 and 6+1=<<6+1=7>>7.\n#### 7") == "2*3=6\n6+1=7\n#### 7"


def test_arithmetic_drills_are_right_and_in_the_word_problems_range_and_format():
    train = training_script()
    drills = train.arithmetic_pairs(2000, seed=7)
    assert drills == train.arithmetic_pairs(2000, seed=7) and len({q for q, _ in drills}) > 1900
    chains = 0
    for question, answer in drills:
        *lines, last = answer.split("\n")
        chains += len(lines) > 1
        value = None
        for line in lines:
            left, result = line.split("=")
            a, op, b = re.fullmatch(r"(\d+)([-+*/])(\d+)", left).groups()
            assert value is None or int(a) == value  # a chain carries its result on
            exact = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op](int(a), int(b))
            assert exact == int(result) and 0 <= int(result) <= 9999
            assert b in question
            value = int(result)
        assert last == f"#### {value}"
    assert 0.2 < chains / len(drills) < 0.4


def test_carry_drills_all_carry_or_borrow_and_are_right():
    train = training_script()
    drills = train.carry_pairs(3000, seed=5)
    subtractions = 0
    for question, answer in drills:
        a, op, b, result = re.fullmatch(r"(\d+)([-+])(\d+)=(\d+)\n#### \4", answer).groups()
        a, b, result = int(a), int(b), int(result)
        assert result == (a + b if op == "+" else a - b) and a in range(10, 1000) and str(b) in question
        columns = [(a // 10 ** k % 10, b // 10 ** k % 10) for k in (0, 1)]
        assert any(x + y >= 10 for x, y in columns) if op == "+" else any(x < y for x, y in columns)
        subtractions += op == "-"
    assert 0.6 < subtractions / len(drills) < 0.73
    assert sum(int(a.split("=")[1].split("\n")[0]) < 100 for _, a in drills) > 300  # small differences too


def test_a_distractor_goes_in_before_the_asking_sentence_and_avoids_the_problems_units():
    train = training_script()
    rng = random.Random(3)
    question = "A class has 24 students. Each student brings 3 pencils. How many pencils are there in all?"
    for _ in range(200):
        changed = train.with_distractor(question, rng)
        added = [s for s in re.split(r"(?<=[.!?])\s+", changed) if s not in question]
        assert len(added) == 1 and changed.endswith("How many pencils are there in all?")
        assert re.search(r"\d+", added[0]) and not re.search(r"\b(students|pencils)\b", added[0])
        assert changed.replace(added[0] + " ", "") == question


def test_gsm8k_problems_take_new_numbers_and_their_chain_is_recomputed():
    train = training_script()
    question = ("Betty's wallet costs $100. She has half of the money. Her parents give her $15 and her grandparents "
                "twice as much as her parents. How much more money does Betty need?")
    answer = ("She has 100 / 2 = $<<100/2=50>>50.\nThe grandparents give 15 * 2 = $<<15*2=30>>30.\n"
              "She needs 100 - 50 - 30 - 15 = $<<100-50-30-15=5>>5 more.\n#### 5")
    steps = train.gsm8k_template(question, answer)
    sources = [source for _, step in steps for source in step]
    # 2 is the wording's ("half", "twice"), 50 and 30 are results of earlier notes.
    assert sources == [("given", 100), ("const", "2"), ("given", 15), ("const", "2"), ("given", 100), ("step", 0),
                       ("step", 1), ("given", 15)]
    rng = random.Random(0)
    seen = set()
    for _ in range(50):
        new_question, chain = train.renumbered(question, steps, rng)
        cost, gift = map(int, re.fullmatch(r"Betty's wallet costs \$(\d+)\. She has half of the money\. Her parents "
                                            r"give her \$(\d+) and .*", new_question).groups())
        assert chain == (f"{cost}/2={cost // 2}\n{gift}*2={gift * 2}\n{cost}-{cost // 2}-{gift * 2}-{gift}="
                         f"{cost - cost // 2 - 3 * gift}\n#### {cost - cost // 2 - 3 * gift}")
        assert cost % 2 == 0 and 50 <= cost <= 151 and 7 <= gift <= 23 and cost - cost // 2 >= 3 * gift
        seen.add((cost, gift))
    assert len(seen) > 20
    # A number worked out in the prose would not follow new numbers; a value both given and a step's is ambiguous.
    assert train.gsm8k_template("She has 30 pens and 11 pencils and 2 bags.",
                                "S = 30 - 11 = 19, so 19*2 = <<19*2=38>>38 and\n#### 38") is None
    assert train.gsm8k_template("He has 4 cats and 8 dogs.", "<<4*2=8>>8 then <<8+8=16>>16\n#### 16") is None


def test_renumbered_gsm8k_train_problems_compute_their_answers(gsm8k_train):
    train = training_script()
    rng = random.Random(1)
    made = changed = 0
    for row in gsm8k_train[:400]:
        steps = train.gsm8k_template(row["question"], row["answer"])
        pair = steps and train.renumbered(row["question"], steps, rng)
        if not pair:
            continue
        made += 1
        question, chain = pair
        *lines, last = chain.split("\n")
        for line in lines:
            expr, result = line.rsplit("=", 1)
            assert abs(eval(expr) - int(result)) < 1e-9 and 0 <= int(result) <= 99999
        assert last == f"#### {lines[-1].rsplit('=', 1)[1]}"
        changed += question != row["question"]
        assert re.sub(r"\d[\d,]*", "N", question) == re.sub(r"\d[\d,]*", "N", row["question"])
    assert made > 150 and changed > 0.8 * made


def test_a_phase_can_shift_the_mixture_and_a_wrong_kind_is_refused_by_name():
    train = training_script()
    assert train.parse_mixture(None) == train.MIXTURE
    shifted = train.parse_mixture("arithmetic=0.36, gsm8k=0")
    assert shifted["gsm8k"] == 0 and shifted["arithmetic"] == pytest.approx(0.36 / 1.1, abs=1e-4)
    assert sum(shifted.values()) == pytest.approx(1, abs=1e-3)
    assert shifted["chat"] == pytest.approx(train.MIXTURE["chat"] / 1.1, abs=1e-4)
    rows = train.Rows(load_tokenizer(smol_diffusion.SMOL_DIR), {"wordproblems": [("Add 2 and 3.", "2+3=5\n#### 5")],
                                                               "whole_text": ["A sentence."]}, 0)
    rng = random.Random(0)
    kinds = {rows.batch(256, rng, {"wordproblems": 0.0, "whole_text": 1.0})[2] for _ in range(20)}
    assert kinds == {"whole_text"}
    for wrong, said in (("arithmetics=0.2", "unknown kind 'arithmetics'"), ("gsm8k=lots", "not kind=share"),
                        ("gsm8k=-1", "non-negative")):
        with pytest.raises(SystemExit, match=said):
            train.parse_mixture(wrong)


def test_training_continues_from_the_shipped_adapter_exactly(smol):
    """--init-adapter puts the shipped adapter back into the trainable model: the model computes what the loader's
    does before any step."""
    train = training_script()
    model, _ = train.build_model(smol_diffusion.SMOL_DIR, paths.package_file(smol_diffusion.BASE_PACKAGE,
                                                                            smol_diffusion.BASE_FILE), torch.device("cpu"))
    train.load_adapter(model, smol_diffusion.SMOL_DIR / "adapter.safetensors")
    ids = smol.tokenizer("Tom has 3 apples and buys 5 more.", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = smol.model.float()(ids)
        assert torch.allclose(model.eval()(ids), expected, atol=1e-3, rtol=1e-3)


@pytest.fixture(scope="module")
def smol():
    from core.generation.generator import LLaDAGenerator

    return LLaDAGenerator(str(smol_diffusion.SMOL_DIR), "cpu")


def test_the_shipped_model_is_an_adapter_on_the_packaged_base_with_its_own_tokens(smol):
    files = {f.name: f.stat().st_size for f in smol_diffusion.SMOL_DIR.iterdir()}
    assert files["adapter.safetensors"] <= 40_000_000 and "model.safetensors" not in files
    cfg = smol.model.cfg
    assert cfg.shifted_prediction and cfg.weight_tying and (cfg.n_heads, cfg.n_kv_heads, cfg.n_layers) == (9, 3, 30)
    vocab = smol.tokenizer.get_vocab()
    assert (smol.mask_id, smol.eos_id, smol.eot_id) == (vocab["<empty_output>"], vocab["<|endoftext|>"], vocab["<|im_end|>"])
    record = json.loads((smol_diffusion.SMOL_DIR / "training.json").read_text())
    assert record["script"] == "scripts/train_smol_diffusion.py" and record["base"]["sha256"] == paths.sha256(
        paths.package_file(smol_diffusion.BASE_PACKAGE, smol_diffusion.BASE_FILE))


def test_a_handful_of_free_form_problems_are_solved_and_dropping_words_loses_them(smol):
    """Direction, not time: the first five hand-written problems (it solves two of them on this CPU)
    and the same problems with half their words dropped at random."""
    from core.llada.sampler import PRESETS
    from core.pipeline.math_eval import evaluate

    rows = hand_written(HAND_WRITTEN[0])[:5]
    questions, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
    params = PRESETS[smol_diffusion.SMOL_PRESET][1]
    original = evaluate(smol, questions, answers, params, batch_size=5)
    dropped = evaluate(smol, questions, answers, params, compressor="random", ratio=2.0, batch_size=5)
    assert original.correct >= 2
    assert dropped.correct < original.correct


@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_every_hand_written_problem_s_solution_computes_its_answer_in_one_to_three_steps(name):
    ops = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
    rows = hand_written(name)
    assert len(rows) >= 60 and len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        lines = row["solution"].splitlines()
        for line in lines:
            a, op, b, result = re.fullmatch(r"(\d+) ([-+*/]) (\d+) = (\d+)", line).groups()
            assert ops[op](int(a), int(b)) == int(result), (row["id"], line)
        assert int(lines[-1].rpartition("= ")[2]) == row["answer"] and row["steps"] == len(lines) <= 3, row["id"]
        assert all(int(n) < 1000 for n in re.findall(r"\d+", row["question"])), row["id"]


def test_the_two_hand_written_sets_share_no_problem():
    questions = [{row["question"] for row in hand_written(name)} for name in HAND_WRITTEN]
    assert not questions[0] & questions[1]


def test_it_is_the_offline_default_with_its_own_preset_and_a_source_it_answers_part_of(monkeypatch):
    from core.llada.sampler import PRESETS
    from core.pipeline.service import CompareRequest, default_model, default_source

    monkeypatch.delenv("COMPRESSLENS_MODEL", raising=False)
    assert not torch.cuda.is_available() and smol_diffusion.installed()
    assert default_model() == smol_diffusion.SMOL_ID and default_source(smol_diffusion.SMOL_ID) == "wordproblems"
    assert CompareRequest(prompt="x").sampler_params() == PRESETS["smol-fast"][1]
    monkeypatch.setattr("core.generation.smol_diffusion.package_folder", lambda package: None)
    assert not smol_diffusion.installed()


def test_its_held_out_word_problems_are_a_prompt_source_disjoint_from_its_training_split():
    from core.data import datasets, wordproblems

    held_out = datasets.load_source("wordproblems")
    assert len(held_out) == 500 and {s.task for s in held_out} == {"math"}
    assert all(s.gold_answer and s.gold_solution.endswith(f"#### {s.gold_answer}") for s in held_out)
    trained = {p.question for p in wordproblems.generate(4000, "train", seed=0)}
    assert not trained & {s.prompt for s in held_out}


def test_the_engine_knows_the_shipped_model_by_its_id_and_says_what_it_is(smol, monkeypatch):
    from core.pipeline.service import ModelPool, default_preset

    paths = []
    monkeypatch.setattr("core.pipeline.service.LLaDAGenerator", lambda path, device: paths.append(path) or smol)
    generator = ModelPool("cpu").generator(smol_diffusion.SMOL_ID)
    assert paths == [str(smol_diffusion.SMOL_DIR)]
    assert generator.info.model_id == smol_diffusion.SMOL_ID
    assert generator.info.notes[-1].startswith("SmolLM2 diffusion model: SmolLM2-135M-Instruct")
    assert default_preset(smol_diffusion.SMOL_ID) == "smol-fast" and default_preset("GSAI-ML/LLaDA-8B-Instruct") == "demo"
