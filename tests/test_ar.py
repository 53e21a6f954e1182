import json

import pytest

from core.errors import UserError
from core.generation.ar import PACKAGED_SMOLLM2, ARGenerator, is_autoregressive
from core.llada.sampler import SamplerParams
from core.pipeline.service import CompareRequest, compare

SHORT = SamplerParams(gen_length=24, steps=24, block_length=24)


@pytest.fixture(scope="module")
def engine(model_pool):
    return model_pool


@pytest.fixture(scope="module")
def smollm(engine):
    generator = engine.generator(PACKAGED_SMOLLM2)
    assert isinstance(generator, ARGenerator)
    return generator


def test_control_is_chosen_by_checkpoint_type(tiny_checkpoint, tmp_path):
    assert is_autoregressive(PACKAGED_SMOLLM2) and is_autoregressive("somewhere/model.gguf")
    assert not is_autoregressive(str(tiny_checkpoint))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert is_autoregressive(str(tmp_path))
    with pytest.raises(UserError, match="GGUF file not found"):
        ARGenerator(str(tmp_path / "missing.gguf"))


def test_packaged_control_runs_offline_with_its_chat_template(smollm):
    assert smollm.info.kind == "ar" and smollm.info.parameters > 100_000_000
    question = "What is 12 + 30?"
    # The template wraps the question in the model's own turn markers.
    assert smollm.prompt_length(question) > smollm.count_tokens(question) + 5
    output = smollm.generate([question], SHORT, seed=0)[0]
    assert len(output.token_ids) == 24 and output.forward_calls <= 24 and output.text
    assert output.text == smollm.generate([question], SHORT, seed=0)[0].text  # greedy is deterministic


def test_the_control_commits_one_token_a_step_and_reads_each_token_once(smollm):
    question = "What is 12 + 30?"
    output = smollm.generate([question], SHORT, seed=0)[0]
    made = output.forward_calls
    assert output.commit_steps == list(range(1, made + 1)) + [0] * (24 - made)
    # Greedy: each committed token was the most probable, so its probability is the top one.
    assert all(0.0 < p <= 1.0 for p in output.commit_probs[:made])
    assert "".join(output.pieces).strip().startswith(output.text[:5])
    assert output.tokens_processed == smollm.prompt_length(question) + made - 1


def test_left_padded_batch_matches_each_prompt_alone(smollm):
    prompts = ["What is 12 + 30?", "Name three colours of the rainbow and say why the sky looks blue."]
    together = smollm.generate(prompts, SHORT, seed=0)
    for prompt, batched in zip(prompts, together):
        assert smollm.generate([prompt], SHORT, seed=0)[0].token_ids == batched.token_ids


def test_sampling_is_seeded(smollm):
    warm = SamplerParams(gen_length=24, steps=24, block_length=24, temperature=1.0)
    question = ["Write one sentence about the sea."]
    first = smollm.generate(question, warm, seed=3)[0].text
    assert first == smollm.generate(question, warm, seed=3)[0].text
    assert {smollm.generate(question, warm, seed=s)[0].text for s in range(4, 8)} != {first}


def test_compare_stores_a_control_run(engine, smollm, db_url):
    request = CompareRequest(prompt="Tom has 3 apples and buys 5 more. How many apples does Tom have now?",
                             compressor="random", ratio=2.0, model=PACKAGED_SMOLLM2, preset="custom",
                             sampler={"gen_length": 24, "steps": 24, "block_length": 24}, task="math",
                             gold_solution="#### 8")
    view = compare(request, engine, db_url)
    assert view["model"]["kind"] == "ar" and view["model"]["id"] == PACKAGED_SMOLLM2
    assert view["model"]["path"].endswith(".gguf")
    assert len(view["output_token_ids"]["original"]) == 24 and view["original_output"]
    assert set(view["metrics"]["original"]["gold"]) == {"exact_match"}
    assert view["prompt_tokens"]["original"] == smollm.count_tokens(request.prompt)
