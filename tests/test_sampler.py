import pytest
import torch
import torch.nn.functional as F

from core.generation.generator import LLaDAGenerator
from core.llada.loader import load_llada, load_tokenizer
from core.llada.sampler import PRESETS, SamplerParams, forward_logits, generate, get_num_transfer_tokens, infill
from core.llada.tokenizer import CHAT_TEMPLATE, EOS, EOT, MASK, chat_prompt, fallback_chat_prompt


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_llada(tiny_checkpoint, "cpu")


@pytest.fixture(scope="module")
def ids(tiny_checkpoint):
    tok = load_tokenizer(tiny_checkpoint)
    vocab = tok.get_vocab()
    return {"mask": vocab[MASK], "eos": vocab[EOS], "eot": vocab[EOT], "tok": tok}


def prompt_ids(ids, text="A water tank holds 1,200 liters. How many minutes?"):
    tok = ids["tok"]
    return torch.tensor([tok(chat_prompt(tok, text), add_special_tokens=False).input_ids])


def run(model, ids, prompt, **kw):
    args = dict(steps=16, gen_length=16, block_length=8, mask_id=ids["mask"], eos_id=ids["eos"], eot_id=ids["eot"])
    args.update(kw)
    return generate(model, prompt, **args)


def test_even_split_of_commits():
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, :3] = False
    schedule = get_num_transfer_tokens(mask, 4)
    assert schedule.tolist() == [[3, 3, 2, 2], [2, 2, 2, 1]]


def test_exact_commits_per_step_prompt_untouched_no_mask_left(model, ids):
    prompt = prompt_ids(ids)
    P = prompt.shape[1]
    seen = []
    out = run(model, ids, prompt, steps=12, gen_length=24, block_length=8,
              on_step=lambda done, total, x: seen.append((done, total, x.clone())))
    assert [d for d, _, _ in seen] == list(range(1, 13)) and seen[0][1] == 12
    # 3 blocks x 4 steps, 8 masks per block: 2 commits every step, only inside the active block.
    previous = torch.cat([prompt, torch.full((1, 24), ids["mask"])], dim=1)
    for step, (_, _, x) in enumerate(seen):
        committed = (previous == ids["mask"]) & (x != ids["mask"])
        assert committed.sum().item() == 2
        block = step // 4
        assert committed[0, P + block * 8:P + (block + 1) * 8].sum().item() == 2
        previous = x
    assert torch.equal(out[:, :P], prompt)
    assert not (out == ids["mask"]).any()


def test_uneven_split_commits_one_more_in_first_steps(model, ids):
    prompt = prompt_ids(ids)
    counts = []
    previous = [torch.cat([prompt, torch.full((1, 10), ids["mask"])], dim=1)]

    def record(_done, _total, x):
        counts.append(((previous[0] == ids["mask"]) & (x != ids["mask"])).sum().item())
        previous[0] = x.clone()

    run(model, ids, prompt, steps=4, gen_length=10, block_length=10, on_step=record)
    assert counts == [3, 3, 2, 2]


def test_same_seed_same_output_and_seeds_differ(model, ids):
    prompt = prompt_ids(ids)

    def sample(seed):
        return run(model, ids, prompt, temperature=1.0, remasking="random",
                   rng=torch.Generator().manual_seed(seed))

    assert torch.equal(sample(7), sample(7))
    assert not torch.equal(sample(7), sample(8))


def test_left_padded_batch_matches_each_prompt_alone(tiny_checkpoint):
    gen = LLaDAGenerator(str(tiny_checkpoint), "cpu")
    params = SamplerParams(gen_length=16, steps=16, block_length=8)
    prompts = ["Short one.", "A much longer prompt that has many more tokens than the first prompt has, surely."]
    together = gen.generate(prompts, params, seed=0)
    for prompt, batched in zip(prompts, together):
        alone = gen.generate([prompt], params, seed=0)[0]
        assert alone.token_ids == batched.token_ids


def reference_generate(model, prompt, steps, gen_length, block_length, mask_id):
    """LLaDA's generate() restated for one prompt, temperature 0, low_confidence, no options."""
    x = torch.cat([prompt, torch.full((1, gen_length), mask_id)], dim=1)
    P = prompt.shape[1]
    per_block = steps // (gen_length // block_length)
    for b in range(gen_length // block_length):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        n_masks = int((x[0, lo:hi] == mask_id).sum())
        for i in range(per_block):
            k = n_masks // per_block + (1 if i < n_masks % per_block else 0)
            logits = model(x)[0].double()
            probs = F.softmax(logits, -1)
            proposal = logits.argmax(-1)
            conf = probs.gather(-1, proposal[:, None])[:, 0]
            candidates = [j for j in range(lo, hi) if x[0, j] == mask_id]
            chosen = sorted(candidates, key=lambda j: -conf[j].item())[:k]
            for j in chosen:
                x[0, j] = proposal[j]
    return x


def test_matches_the_reference_algorithm_restated(model, ids):
    prompt = prompt_ids(ids, "Priya reads 25 pages every weekday.")
    ours = run(model, ids, prompt, steps=12, gen_length=24, block_length=8)
    theirs = reference_generate(model, prompt, 12, 24, 8, ids["mask"])
    assert torch.equal(ours, theirs)


class Biased(torch.nn.Module):
    """Wraps a model and adds a bias to chosen token logits, to steer what it proposes."""

    def __init__(self, inner, bias):
        super().__init__()
        self.inner, self.bias = inner, bias

    def forward(self, x, attention_mask=None):
        return self.inner(x, attention_mask=attention_mask) + self.bias


def test_random_remasking_changes_commit_order(model, ids):
    prompt = prompt_ids(ids)

    def commit_order(**kw):
        seen = []
        run(model, ids, prompt, steps=8, gen_length=16, block_length=16,
            on_step=lambda d, t, x: seen.append((x[0, prompt.shape[1]:] != ids["mask"]).nonzero().flatten().tolist()),
            **kw)
        return seen

    confident = commit_order()
    assert confident == commit_order()
    shuffled = commit_order(remasking="random", rng=torch.Generator().manual_seed(0))
    assert shuffled != confident and len(shuffled[-1]) == 16


def test_temperature_samples_instead_of_argmax(model, ids):
    prompt = prompt_ids(ids)
    greedy = run(model, ids, prompt)
    assert torch.equal(greedy, run(model, ids, prompt, temperature=0.0, rng=torch.Generator().manual_seed(1)))
    assert not torch.equal(greedy, run(model, ids, prompt, temperature=2.0, rng=torch.Generator().manual_seed(1)))


def test_cfg_uses_an_unconditional_pass(model, ids):
    prompt = prompt_ids(ids)
    calls = []

    class Spy(torch.nn.Module):
        def forward(self, x, attention_mask=None):
            calls.append(x.clone())
            return model(x, attention_mask=attention_mask)

    run(Spy(), ids, prompt, cfg_scale=3.0)
    P = prompt.shape[1]
    assert calls[0].shape[0] == 2 and (calls[0][1, :P] == ids["mask"]).all()
    assert torch.equal(calls[0][0, :P], prompt[0]) and torch.equal(calls[0][0, P:], calls[0][1, P:])
    # The guided logits are un + (scale + 1) * (cond - un), the unconditional pass with the prompt masked.
    x = calls[3][:1]
    prompt_index = torch.zeros_like(x, dtype=torch.bool)
    prompt_index[:, :P] = True
    unconditional = x.clone()
    unconditional[:, :P] = ids["mask"]
    cond, un = model(x), model(unconditional)
    guided = forward_logits(model, x, None, prompt_index, 3.0, ids["mask"])
    assert torch.allclose(guided, un + 4.0 * (cond - un), atol=1e-5)
    assert not torch.allclose(guided, cond, atol=1e-3)


def test_logits_eos_inf_forbids_eos(model, ids):
    prompt = prompt_ids(ids)
    bias = torch.zeros(model.cfg.embedding_size)
    bias[ids["eos"]] = 50.0
    eager = Biased(model, bias)
    P = prompt.shape[1]
    assert (run(eager, ids, prompt)[0, P:] == ids["eos"]).all()
    assert not (run(eager, ids, prompt, logits_eos_inf=True)[0, P:] == ids["eos"]).any()


def test_confidence_eos_eot_inf_commits_eos_and_eot_last(model, ids):
    prompt = prompt_ids(ids)
    P = prompt.shape[1]

    class EosAtEvenPositions(torch.nn.Module):
        """EOS (and EOT) become the most confident proposals at every other answer position."""

        def forward(self, x, attention_mask=None):
            logits = model(x, attention_mask=attention_mask).clone()
            logits[:, P::4, ids["eos"]] += 50.0
            logits[:, P + 2::4, ids["eot"]] += 50.0
            return logits

    def commits(**kw):
        seen = []
        run(EosAtEvenPositions(), ids, prompt, steps=8, gen_length=8, block_length=8,
            on_step=lambda d, t, x: seen.append(x[0, P:].clone()), **kw)
        return [int(s[(s != ids["mask"]) & (prev == ids["mask"])][0])
                for prev, s in zip([torch.full((8,), ids["mask"])] + seen, seen)]

    special = {ids["eos"], ids["eot"]}
    assert set(commits()[:4]) == special  # without the option they are committed first
    demoted = commits(confidence_eos_eot_inf=True)
    assert not special & set(demoted[:4]) and set(demoted[4:]) == special


def test_params_validation_and_presets():
    assert PRESETS["demo"][1] == SamplerParams(128, 128, 32)
    assert (PRESETS["gsm8k"][1].gen_length, PRESETS["gsm8k"][1].steps, PRESETS["gsm8k"][1].block_length) == (256, 256, 8)
    assert PRESETS["pure"][1].confidence_eos_eot_inf and PRESETS["pure"][1].block_length == 512
    assert SamplerParams().problems() == []
    assert "not a multiple of block_length" in SamplerParams(gen_length=100, block_length=32).problems()[0]
    assert "not a multiple of the number of blocks" in SamplerParams(gen_length=64, steps=6, block_length=16).problems()[0]
    assert SamplerParams(remasking="best").problems() == ["remasking must be one of low_confidence, random"]


def test_chat_template_and_builtin_fallback_agree(tiny_checkpoint, tmp_path):
    from core.generation.demo import build_tiny_checkpoint

    with_template = load_tokenizer(tiny_checkpoint)
    assert with_template.chat_template == CHAT_TEMPLATE
    bare = load_tokenizer(build_tiny_checkpoint(tmp_path / "bare", chat_template=False))
    assert not bare.chat_template
    text = "  How many apples?\n"
    expected = "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nHow many apples?<|eot_id|>" \
               "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert chat_prompt(with_template, text) == expected == chat_prompt(bare, text) == fallback_chat_prompt(text)



def test_infill_fills_only_the_masks_wherever_they_stand_and_the_surest_first(model):
    mask_id = model.cfg.mask_token_id
    x = torch.randint(10, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    x[0, [1, 2, 7]] = mask_id
    x[1, [0, 11]] = mask_id
    filled = infill(model, x, steps=3, mask_id=mask_id)
    kept = x != mask_id
    assert torch.equal(filled[kept], x[kept]) and not (filled == mask_id).any()
    probs = model(x).double().softmax(-1)
    # One step commits every mask at its argmax; with three, each row's surest mask goes first.
    assert torch.equal(infill(model, x, steps=1, mask_id=mask_id)[~kept], probs.argmax(-1)[~kept])
    surest = torch.where(~kept, probs.max(-1).values, -torch.inf).argmax(-1)
    for row in range(2):
        assert filled[row, surest[row]] == probs[row, surest[row]].argmax()
