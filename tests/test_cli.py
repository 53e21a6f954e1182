import json
import re
import os
import subprocess
import sys

import pytest

from core.__main__ import main
from core.generation.demo import build_tiny_checkpoint
from core.generation.generator import LLaDAGenerator
from db.queries import run_count
from db.session import session_scope

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTION = ("A water tank holds 1,200 liters. It is filled at 15 liters per minute while a leak drains 3 liters "
            "per minute. Starting from empty, how many minutes does it take to fill the tank?")


def runs_in(url):
    with session_scope(url) as session:
        return run_count(session)


def test_compare_json_end_to_end(tiny_checkpoint, db_url):
    result = subprocess.run(
        [sys.executable, "-m", "core", "compare", "--model", str(tiny_checkpoint), "--prompt", QUESTION,
         "--compressor", "random", "--ratio", "2", "--preset", "demo", "--seed", "3", "--gold", "100", "--json",
         "--trajectory"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "COMPRESSLENS_DB_URL": db_url}, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["original_prompt"] == QUESTION
    kept = out["kept_words"]
    assert len(kept) == len(QUESTION.split()) and 0 < sum(kept) < len(kept)
    assert out["compressed_prompt"] == " ".join(w for w, k in zip(QUESTION.split(), kept) if k)
    assert len(out["output_token_ids"]["original"]) == len(out["output_token_ids"]["compressed"]) == 128
    assert isinstance(out["original_output"], str) and isinstance(out["compressed_output"], str)
    versus = out["metrics"]["compressed"]["original_output"]
    assert {"bleu", "rouge1", "rouge2", "rougeL", "bertscore_p", "bertscore_r", "bertscore_f1", "exact_match"} <= set(versus)
    assert set(out["metrics"]["original"]["gold"]) == {"exact_match"}
    assert out["gold_answer"] == "100" and out["task"] == "math"
    assert out["sampler"] == {"gen_length": 128, "steps": 128, "block_length": 32, "temperature": 0.0,
                              "cfg_scale": 0.0, "remasking": "low_confidence", "logits_eos_inf": False,
                              "confidence_eos_eot_inf": False, "mode": "reference", "cache": "none",
                              "threshold": 0.0, "early_stop": False, "window": -1, "entropy_threshold": 0.0,
                              "alg": "entropy", "alg_temp": 0.0, "top_p": 1.0, "top_k": 0, "eps": 0.001,
                              "editing_threshold": -1.0, "max_post_steps": 16}
    assert out["compressor_params"] == {"seed": 0} and out["seed"] == 3
    assert out["model"]["path"] == str(tiny_checkpoint) and out["versions"]["torch"].startswith("2.13")
    assert runs_in(db_url) == 1 and out["run_id"] == 1
    # The demo preset's 4 blocks of 32, one commit a step: each step commits one token of its block.
    for condition in ("original", "compressed"):
        trajectory = out["trajectories"][condition]
        assert sorted(trajectory["step"]) == list(range(1, 129))
        assert all(32 * (i // 32) < s <= 32 * (i // 32 + 1) for i, s in enumerate(trajectory["step"]))
        assert len(trajectory["piece"]) == len(trajectory["prob"]) == 128
        compute = out["compute"][condition]
        assert compute["forward_passes"] == 128 and compute["peak_memory_bytes"] is None
        prompt = out[f"{condition}_prompt"]  # as the model reads it: inside the chat template
        assert compute["tokens_processed"] == 128 * (LLaDAGenerator(str(tiny_checkpoint), "cpu").prompt_length(prompt)
                                                     + 128)


def test_same_seed_same_run(tiny_checkpoint, db_url, capsys):
    args = ["compare", "--model", str(tiny_checkpoint), "--prompt", QUESTION, "--compressor", "truncate",
            "--ratio", "1.5", "--preset", "custom", "--sampler-option", "gen_length=32",
            "--sampler-option", "steps=32", "--sampler-option", "block_length=8",
            "--sampler-option", "temperature=0.7", "--seed", "11", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["output_token_ids"] == second["output_token_ids"] and second["run_id"] == first["run_id"] + 1
    assert first["sampler"]["temperature"] == 0.7 and len(first["output_token_ids"]["original"]) == 32


@pytest.fixture
def corrupt_checkpoint(tmp_path):
    ckpt = build_tiny_checkpoint(tmp_path / "corrupt", max_shard_bytes=40_000)
    shard = sorted(ckpt.glob("model-*.safetensors"))[0]
    shard.write_bytes(b"\x00garbage")
    return ckpt


@pytest.mark.parametrize("case,extra,message", [
    ("empty prompt", ["--prompt", "   "], "The prompt is empty"),
    ("ratio too small", ["--prompt", QUESTION, "--ratio", "1"], r"ratio must be in \(1, 20\]"),
    ("ratio too large", ["--prompt", QUESTION, "--ratio", "21"], r"ratio must be in \(1, 20\]"),
    ("unknown compressor", ["--prompt", QUESTION, "--compressor", "gzip"], "Unknown compressor 'gzip'"),
    ("too long", ["--prompt", "word " * 2000], "exceeds the model's context of 1024 tokens"),
    ("bad preset", ["--prompt", QUESTION, "--preset", "fastest"], "Unknown sampler preset"),
    ("bad sampler", ["--prompt", QUESTION, "--preset", "custom", "--sampler-option", "block_length=7"],
     "not a multiple of block_length"),
])
def test_bad_input_gets_a_message_and_stores_nothing(case, extra, message, tiny_checkpoint, db_url, capsys):
    assert main(["compare", "--model", str(tiny_checkpoint), "--compressor", "random"] + extra) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert runs_in(db_url) == 0


def test_missing_and_corrupt_models_get_a_message(tmp_path, corrupt_checkpoint, db_url, capsys):
    assert main(["compare", "--model", str(tmp_path / "nowhere"), "--prompt", QUESTION, "--compressor", "random"]) == 2
    assert "Model directory not found" in capsys.readouterr().err
    assert main(["compare", "--model", str(corrupt_checkpoint), "--prompt", QUESTION, "--compressor", "random"]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    assert main(["compare", "--model", "GSAI-ML/LLaDA-8B-Instruct", "--prompt", QUESTION, "--compressor", "random"]) == 2
    assert "not downloaded" in capsys.readouterr().err
    assert runs_in(db_url) == 0


@pytest.mark.parametrize("extra,message", [
    (["--preset", "gsm8k", "--sampler-option", "gen_length=32"], "only with preset 'custom'"),
    (["--preset", "custom", "--sampler-option", "speed=3"], r"Unknown sampler parameter\(s\): speed"),
    (["--preset", "custom", "--sampler-option", "gen_length=lots"], "Bad sampler parameter value"),
    (["--preset", "custom", "--sampler-option", "logits_eos_inf=maybe"], "is not true or false"),
])
def test_sampler_options_are_checked(extra, message, tiny_checkpoint, db_url, capsys):
    args = ["compare", "--model", str(tiny_checkpoint), "--prompt", QUESTION, "--compressor", "random"]
    assert main(args + extra) == 2
    assert re.search(message, capsys.readouterr().err)
    assert runs_in(db_url) == 0
