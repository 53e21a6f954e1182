import json
import operator
import re
import subprocess
import sys

import pytest
import torch

from core.data import mathgen
from core.generation import demo
from core.llada.loader import INDEX_FILE, load_llada
from core.llada.model import LLaDA
from core.llada.sampler import PRESETS
from core.pipeline.math_eval import evaluate
from core.pipeline.service import CompareRequest, default_model, default_preset, default_source


def test_generator_is_seeded_and_splits_share_no_instance():
    train = mathgen.generate(3000, "train", seed=0)
    heldout = mathgen.generate(500, "heldout", seed=0)
    assert train[:50] == mathgen.generate(50, "train", seed=0)
    assert mathgen.generate(50, "train", seed=1) != train[:50]
    assert not {p.instance_key for p in train} & {p.instance_key for p in heldout}
    assert not {p.question for p in train} & {p.question for p in heldout}
    assert len({p.instance_key for p in heldout}) == 500
    with pytest.raises(ValueError):
        mathgen.generate(1, "test", seed=0)


def test_problems_are_worked_correctly_in_one_to_four_steps():
    problems = mathgen.generate(2000, "train", seed=3)
    assert {p.steps for p in problems} == {1, 2, 3, 4}
    assert len({p.template for p in problems}) == len(mathgen.TEMPLATES)
    for p in problems:
        *lines, last = p.solution.split("\n")
        assert last == f"#### {p.answer}"
        for line in lines:
            expr, result = line.split("=")
            left, op, right = re.fullmatch(r"(\d+)([-+*/])(\d+)", expr).groups()
            a, b = int(left), int(right)
            value = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op](a, b)
            assert value == int(result) and 0 <= value < 10_000
            if op == "*":
                assert min(a, b) <= 12
            if op == "/":
                assert b <= 12
        assert lines[-1].endswith(f"={p.answer}")
        assert all(int(n) < 10_000 for n in re.findall(r"\d+", p.question))


def test_demo_checkpoint_is_a_hub_layout_small_enough_to_ship():
    files = {f.name: f.stat().st_size for f in demo.DEMO_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert INDEX_FILE not in files and sum(files.values()) <= 25 * 2**20
    config = json.loads((demo.DEMO_DIR / "config.json").read_text())
    model = load_llada(demo.DEMO_DIR, "cpu")
    assert isinstance(model, LLaDA) and model.cfg.d_model == config["d_model"]
    assert demo.parameter_count() == model.num_parameters()
    record = json.loads((demo.DEMO_DIR / "training.json").read_text())
    assert record["script"] == "scripts/train_demo_model.py" and record["train_seconds"] < 600


def test_without_the_smollm2_package_the_demo_model_is_the_offline_default_and_says_so(monkeypatch):
    monkeypatch.delenv("COMPRESSLENS_MODEL", raising=False)
    monkeypatch.setattr("core.generation.smol_diffusion.installed", lambda: False)
    assert not torch.cuda.is_available()
    assert default_model() == demo.DEMO_ID and default_preset(demo.DEMO_ID) == "small"
    assert CompareRequest(prompt="x").sampler_params() == PRESETS["small"][1]
    assert default_source(default_model()) == "mathgen"
    note = demo.demo_note(demo.parameter_count())
    assert "Demo model" in note and "1 of 1,467 of LLaDA-8B" in note


def test_demo_model_loads_in_a_fresh_process_and_answers_in_its_preset_length(demo_generator):
    """Its load and answer times are figures of bench/demo_model.py, not assertions: they depend on the machine."""
    code = ("import torch; torch.set_num_threads(2); from core.generation.generator import LLaDAGenerator;"
            "from core.generation.demo import DEMO_DIR; print(LLaDAGenerator(str(DEMO_DIR), 'cpu').info.parameters)")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=str(demo.DEMO_DIR.parents[1])).stdout.strip()
    assert int(printed) == demo.parameter_count()
    problem = mathgen.generate(1, "heldout", seed=0)[0]
    output = demo_generator.generate([problem.question], PRESETS["small"][1], seed=0)[0]
    assert len(output.token_ids) == 64 and output.forward_calls == 64


@pytest.mark.slow
def test_demo_model_solves_heldout_problems_and_compression_hurts(demo_generator, demo_heldout):
    questions, answers, original = demo_heldout
    dropped = evaluate(demo_generator, questions, answers, PRESETS["small"][1], compressor="random", ratio=2.0,
                       batch_size=len(questions))
    assert original.accuracy >= 0.90
    assert original.accuracy - dropped.accuracy >= 0.30
    assert abs(dropped.achieved_ratio - 2.0) < 0.2
