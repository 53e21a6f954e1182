"""LLaDA's reference sampler: semi-autoregressive blocks of iterative unmasking.

The answer starts as ``gen_length`` mask tokens, split into blocks of ``block_length``. Each
block gets ``steps / num_blocks`` steps; each step runs one full forward pass, proposes a token
for every position (argmax, or Gumbel-max in float64 when temperature > 0), scores each proposal
(softmax probability for ``low_confidence``, uniform noise for ``random``), and commits the
``k`` most confident proposals among the current block's masked positions, ``k`` from an even
split of the block's masks over its steps. This is the algorithm of the authors'
``generate()``; faster modes live beside it, never inside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

REMASKING = ("low_confidence", "random")
# dream: Dream's own sampler (core/llada/dream.py); block: LLaDA 2.x's (core/llada/block_diffusion.py)
MODES = ("reference", "fast", "dream", "block")
DREAM_ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")
CACHES = ("none", "prefix", "dual", "block")  # fast mode's: prefix, dual (approximate); block mode's: block (exact)

# Proposals of EOS/EOT under ``confidence_eos_eot_inf`` rank below every real confidence
# (softmax probabilities and uniform noise are >= 0) yet above the -inf of positions that
# may not be committed, so they are committed last but never in place of a masked slot.
LAST_CONFIDENCE = -1.0


@dataclass(frozen=True)
class SamplerParams:
    gen_length: int = 128
    steps: int = 128
    block_length: int = 32
    temperature: float = 0.0
    cfg_scale: float = 0.0
    remasking: str = "low_confidence"
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    # The loop that runs: "reference" (the authors' generate()) or "fast" (core/llada/fast.py),
    # which is token-identical at temperature 0 unless one of the approximations below is on.
    mode: str = "reference"
    cache: str = "none"  # approximate: "prefix" or "dual" KV cache
    threshold: float = 0.0  # approximate when > 0: confidence-threshold parallel decoding
    early_stop: bool = False  # approximate: stop once every answer has ended in a completed block
    window: int = -1  # approximate when >= 0: mask positions past the active block that are computed
    entropy_threshold: float = 0.0  # when > 0: dParallel's rule, commit the block's masks of entropy <= it
    # Dream's sampler (mode "dream"): its ordering, its temperature over positions, nucleus and top-k
    # filtering of the proposals (1 and 0: off) and the last timestep; no blocks (block_length = gen_length).
    alg: str = "entropy"
    alg_temp: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    eps: float = 1e-3
    # LLaDA 2.x's sampler (mode "block"): ``steps`` per block, ``threshold`` its acceptance rule, ``early_stop``
    # its EOS early stop, ``top_p``/``top_k`` its filters; LLaDA 2.1's editing (-1: off) and its extra steps.
    editing_threshold: float = -1.0
    max_post_steps: int = 16

    @property
    def approximate(self) -> bool:
        """Whether the loop may give other tokens than its family's reference (LLaDA 2.x's block loop never does:
        its threshold is the authors' rule and its cache is exact)."""
        if self.mode == "block":
            return False
        return (self.cache != "none" or self.threshold > 0 or self.early_stop or self.window >= 0
                or self.entropy_threshold > 0)

    @property
    def canvas_room(self) -> int:
        """The most canvas positions past the prompt a loop uses (LLaDA 2.x's runs to the end of a block)."""
        return self.gen_length + (self.block_length - 1 if self.mode == "block" else 0)

    def label(self) -> str:
        """How this loop relates to the reference, in words for pages and tables."""
        if self.mode == "reference":
            return "reference"
        filters = [f"top-p {self.top_p:g}"] * (self.top_p < 1) + [f"top-k {self.top_k}"] * (self.top_k > 0)
        if self.mode == "dream":
            return f"Dream, {self.alg}" + "".join(f", {f}" for f in filters) + (
                f", alg_temp {self.alg_temp:g}" if self.alg_temp > 0 else "")
        if self.mode == "block":
            parts = [f"block {self.block_length}", f"threshold {self.threshold:g}"] + filters
            parts += [f"editing {self.editing_threshold:g}, {self.max_post_steps} post steps"] * (
                self.editing_threshold >= 0)
            parts += ["exact block cache"] * (self.cache == "block") + ["EOS early stop"] * self.early_stop
            return "LLaDA 2.x block diffusion (" + ", ".join(parts) + ")"
        if not self.approximate:
            return "fast, exact"
        parts = [f"{self.cache} cache"] if self.cache != "none" else []
        parts += [f"threshold {self.threshold:g}"] if self.threshold > 0 else []
        parts += [f"entropy threshold {self.entropy_threshold:g} (dParallel)"] if self.entropy_threshold > 0 else []
        parts += ["EOS early stop"] if self.early_stop else []
        parts += [f"window {self.window}"] if self.window >= 0 else []
        return "fast, APPROXIMATE (" + ", ".join(parts) + ")"

    def problems(self) -> list[str]:
        """What is wrong with these parameters, in words; empty when they are usable."""
        out = []
        for name in ("gen_length", "steps", "block_length"):
            if int(getattr(self, name)) < 1:
                out.append(f"{name} must be at least 1")
        if out:
            return out
        if self.mode == "block":
            return self._block_problems()
        if self.mode in MODES and self.cache == "block":
            out.append("the block cache belongs to LLaDA 2.x's sampler (mode 'block')")
        if self.editing_threshold != -1 or self.max_post_steps != 16:
            out.append("editing_threshold and max_post_steps belong to LLaDA 2.x's sampler (mode 'block')")
        if self.gen_length % self.block_length:
            out.append(f"gen_length {self.gen_length} is not a multiple of block_length {self.block_length}")
        else:
            num_blocks = self.gen_length // self.block_length
            if self.steps % num_blocks:
                out.append(f"steps {self.steps} is not a multiple of the number of blocks {num_blocks}")
        if self.steps > self.gen_length:
            out.append(f"steps {self.steps} exceed gen_length {self.gen_length}")
        if self.remasking not in REMASKING:
            out.append(f"remasking must be one of {', '.join(REMASKING)}")
        if self.temperature < 0:
            out.append("temperature must be >= 0")
        if self.cfg_scale < 0:
            out.append("cfg_scale must be >= 0")
        if self.mode not in MODES:
            out.append(f"mode must be one of {', '.join(MODES)}")
        if self.cache not in CACHES:
            out.append(f"cache must be one of {', '.join(CACHES)}")
        if not 0 <= self.threshold < 1:
            out.append("threshold must be in [0, 1)")
        if self.window < -1:
            out.append("window must be -1 (off) or at least 0")
        if self.mode == "reference" and self.approximate:
            out.append("cache, threshold, entropy_threshold, early_stop and window need mode 'fast'")
        if self.mode == "fast" and self.cfg_scale > 0:
            out.append("classifier-free guidance (cfg_scale > 0) runs in the reference mode only")
        if self.entropy_threshold < 0:
            out.append("entropy_threshold must be >= 0")
        if self.entropy_threshold > 0 and (self.threshold > 0 or self.remasking != "low_confidence"
                                           or self.confidence_eos_eot_inf):
            out.append("entropy_threshold (dParallel's rule) ranks by entropy alone: it goes with no confidence "
                       "threshold, remasking low_confidence and confidence_eos_eot_inf off")
        return out + self._dream_problems()

    def _block_problems(self) -> list[str]:
        out = []
        if self.steps > self.block_length:
            out.append(f"steps (per block, in LLaDA 2.x's sampler) {self.steps} exceed block_length {self.block_length}")
        if self.cache not in ("none", "block"):
            out.append("LLaDA 2.x's sampler takes cache 'none' or 'block' (its exact block cache)")
        if not 0 <= self.threshold < 1:
            out.append("threshold must be in [0, 1)")
        if self.editing_threshold != -1 and not 0 <= self.editing_threshold < 1:
            out.append("editing_threshold must be -1 (no editing, LLaDA 2.0) or in [0, 1) (LLaDA 2.1)")
        if self.max_post_steps < 0:
            out.append("max_post_steps must be >= 0")
        if self.temperature < 0:
            out.append("temperature must be >= 0")
        out += self._filter_problems()
        defaults = SamplerParams()
        others = [f for f in ("cfg_scale", "remasking", "logits_eos_inf", "confidence_eos_eot_inf", "window",
                              "entropy_threshold", "alg", "alg_temp", "eps") if getattr(self, f) != getattr(defaults, f)]
        if others:
            out.append(f"{', '.join(others)} are not LLaDA 2.x's sampler's; it takes block_length, steps, threshold, "
                       "temperature, top_p, top_k, cache, early_stop, editing_threshold and max_post_steps")
        return out

    def _filter_problems(self) -> list[str]:
        """top_p and top_k, which Dream's sampler and LLaDA 2.x's both take."""
        out = []
        if not 0 < self.top_p <= 1:
            out.append("top_p must be in (0, 1]")
        if self.top_k < 0:
            out.append("top_k must be >= 0 (0: off)")
        return out

    def _dream_problems(self) -> list[str]:
        defaults = SamplerParams()
        dream_fields = ("alg", "alg_temp", "top_p", "top_k", "eps")
        if self.mode != "dream":
            changed = [f for f in dream_fields if getattr(self, f) != getattr(defaults, f)]
            return [f"{', '.join(changed)} belong to Dream's sampler (mode 'dream')"] if changed else []
        out = []
        if self.alg not in DREAM_ALGS:
            out.append(f"alg must be one of {', '.join(DREAM_ALGS)}")
        if self.alg_temp < 0:
            out.append("alg_temp must be >= 0")
        out += self._filter_problems()
        if not 0 < self.eps < 1:
            out.append("eps must be in (0, 1)")
        if self.block_length != self.gen_length:
            out.append("Dream's sampler has no blocks: block_length must equal gen_length")
        if self.approximate or self.cfg_scale > 0 or self.remasking != "low_confidence" or self.logits_eos_inf \
                or self.confidence_eos_eot_inf:
            out.append("caches, thresholds, early stop, window, guidance, remasking and the EOS options are LLaDA's "
                       "sampler's; Dream's takes alg, alg_temp, temperature, top_p, top_k and eps")
        return out

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, tuple[str, SamplerParams]] = {
    "demo": ("LLaDA demo", SamplerParams(gen_length=128, steps=128, block_length=32)),
    "gsm8k": ("GSM8K, authors", SamplerParams(gen_length=256, steps=256, block_length=8)),
    "pure": ("pure diffusion", SamplerParams(gen_length=512, steps=512, block_length=512, confidence_eos_eot_inf=True)),
    "small": ("demo model", SamplerParams(gen_length=64, steps=64, block_length=8)),
    # The fastest mode whose demo-model accuracy stays within 2 points of the reference (bench/fast_sampler.py).
    "gsm8k-fast": ("GSM8K, fast approximate (dual cache, threshold 0.95, early stop)",
                   SamplerParams(gen_length=256, steps=256, block_length=32, mode="fast", cache="dual",
                                 threshold=0.95, early_stop=True)),
    "smol-fast": ("SmolLM2 diffusion model, fast approximate (block 32, dual cache, threshold 0.95, early stop)",
                  SamplerParams(gen_length=64, steps=64, block_length=32, mode="fast", cache="dual", threshold=0.95,
                                early_stop=True)),
    "small-fast": ("demo model, fast approximate (dual cache, threshold 0.95, early stop)",
                   SamplerParams(gen_length=64, steps=64, block_length=8, mode="fast", cache="dual",
                                 threshold=0.95, early_stop=True)),
    # The families' published settings (their evaluation scripts; README, "Model families").
    "llada15-gsm8k": ("LLaDA-1.5 GSM8K, authors (gen 256, block 16, EOS/EoT last)",
                      SamplerParams(gen_length=256, steps=256, block_length=16, confidence_eos_eot_inf=True)),
    "dparallel": ("dParallel-LLaDA, authors (entropy threshold 0.5, block 32)",
                  SamplerParams(gen_length=256, steps=256, block_length=32, mode="fast", entropy_threshold=0.5)),
    "illada-gsm8k": ("iLLaDA GSM8K, authors (block 32, one token a step, stop at the end)",
                     SamplerParams(gen_length=2048, steps=2048, block_length=32, mode="fast", early_stop=True)),
    "dream-gsm8k": ("Dream GSM8K, authors (entropy, temperature 0.1, top-p 0.9)",
                    SamplerParams(gen_length=256, steps=256, block_length=256, mode="dream", alg="entropy",
                                  temperature=0.1, top_p=0.9)),
    "dream-demo": ("Dream demo, authors (entropy, temperature 0.2, top-p 0.95)",
                   SamplerParams(gen_length=512, steps=512, block_length=512, mode="dream", alg="entropy",
                                 temperature=0.2, top_p=0.95)),
    "llada-moe": ("LLaDA-MoE, authors (gen 128, block 32, reference)",
                  SamplerParams(gen_length=128, steps=128, block_length=32)),
    "dream-greedy": ("Dream, greedy (entropy, temperature 0: the same tokens every run)",
                     SamplerParams(gen_length=256, steps=256, block_length=256, mode="dream", alg="entropy")),
    # LLaDA 2.x, from its model cards: blocks of 32, temperature 0, EOS early stop; the exact block cache.
    "llada2": ("LLaDA2.0, authors (block 32, 32 steps, threshold 0.95)",
               SamplerParams(gen_length=512, steps=32, block_length=32, mode="block", threshold=0.95, cache="block",
                             early_stop=True)),
    "llada21-quality": ("LLaDA2.1 quality mode, authors (threshold 0.7, editing 0.5)",
                        SamplerParams(gen_length=512, steps=32, block_length=32, mode="block", threshold=0.7,
                                      editing_threshold=0.5, cache="block", early_stop=True)),
    "llada21-speed": ("LLaDA2.1 speed mode, authors (threshold 0.5, editing 0)",
                      SamplerParams(gen_length=512, steps=32, block_length=32, mode="block", threshold=0.5,
                                    editing_threshold=0.0, cache="block", early_stop=True)),
}


def add_gumbel_noise(logits: torch.Tensor, temperature: float, rng: torch.Generator | None) -> torch.Tensor:
    """Gumbel-max in float64: argmax of the result samples softmax(logits / temperature).

    Low precision here is known to hurt generation quality (arXiv:2409.02908), hence float64.
    At temperature 0 the argmax of the logits themselves is the answer.
    """
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=rng)
    gumbel_noise = (-torch.log(noise)) ** temperature
    return logits.exp() / gumbel_noise


def get_num_transfer_tokens(block_mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, steps): masks to commit at each step, an even split with the first ``rem`` steps one more."""
    mask_num = block_mask_index.sum(dim=1, keepdim=True)
    base, remainder = mask_num // steps, mask_num % steps
    step = torch.arange(steps, device=block_mask_index.device)
    return base + (step[None, :] < remainder).long()


def propose(logits: torch.Tensor, temperature: float, remasking: str,
            rng: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, x0_p): a proposal for every position (argmax, or Gumbel-max when temperature > 0) and
    its confidence (softmax probability for ``low_confidence``, uniform noise for ``random``)."""
    x0 = torch.argmax(add_gumbel_noise(logits, temperature, rng), dim=-1)
    if remasking == "low_confidence":
        p = F.softmax(logits.to(torch.float64), dim=-1)
        x0_p = torch.gather(p, dim=-1, index=x0.unsqueeze(-1)).squeeze(-1)
    elif remasking == "random":
        x0_p = torch.rand(x0.shape, dtype=torch.float64, device=logits.device, generator=rng)
    else:
        raise NotImplementedError(remasking)
    return x0, x0_p


def most_confident(confidence: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: each row's ``k[row]`` most confident positions."""
    transfer_index = torch.zeros_like(confidence, dtype=torch.bool)
    for j in range(confidence.shape[0]):
        _, select_index = torch.topk(confidence[j], k=int(k[j]))
        transfer_index[j, select_index] = True
    return transfer_index


class Trace:
    """What a sampling loop did to each row: the step at which every answer position was committed and
    the model's probability of the committed token then (the trajectory), and how many real (not
    padding) token positions its forward passes computed (the compute)."""

    def __init__(self, real: torch.Tensor, gen_length: int):
        """``real`` (B, T): 1 where the canvas holds a prompt or answer position, 0 on left padding."""
        B, T = real.shape
        self.prompt_width = T - gen_length
        self.commit_step = torch.zeros(B, gen_length, dtype=torch.long, device=real.device)  # 0: never
        self.commit_prob = torch.zeros(B, gen_length, dtype=torch.float32, device=real.device)
        self.real_before = F.pad(real.long().cumsum(dim=1), (1, 0))  # real positions in [0, t) is [:, t]
        self.positions = torch.zeros(B, dtype=torch.long, device=real.device)
        self.forward_calls = 0

    def computed(self, first: int, last: int, times: int = 1) -> None:
        """A forward pass computed canvas positions [first, last) of every row (``times`` copies, as CFG)."""
        self.positions += times * (self.real_before[:, last] - self.real_before[:, first])
        self.forward_calls += 1

    def committed(self, step: int, where: torch.Tensor, logits: torch.Tensor, tokens: torch.Tensor,
                  first: int) -> None:
        """``where`` (B, L) marks the answer positions first..first+L-1 of the canvas committed at ``step``
        to ``tokens`` (B, L), whose ``logits`` (B, L, V) the step computed."""
        offset = first - self.prompt_width
        span = slice(offset, offset + where.shape[1])
        self.commit_step[:, span][where] = step
        self.commit_prob[:, span][where] = (F.softmax(logits[where].float(), dim=-1)
                                            .gather(-1, tokens[where].unsqueeze(-1)).squeeze(-1))


def forward_logits(model, x, attention_mask, prompt_index, cfg_scale, mask_id) -> torch.Tensor:
    if cfg_scale == 0:
        return model(x, attention_mask=attention_mask)
    # Unconditional pass: the same canvas with the prompt replaced by masks.
    un_x = x.clone()
    un_x[prompt_index] = mask_id
    both = model(torch.cat([x, un_x]), attention_mask=None if attention_mask is None else attention_mask.repeat(2, 1))
    logits, un_logits = both.chunk(2, dim=0)
    return un_logits + (cfg_scale + 1) * (logits - un_logits)


@torch.no_grad()
def generate(model, prompt: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
             steps: int = 128, gen_length: int = 128, block_length: int = 128, temperature: float = 0.0,
             cfg_scale: float = 0.0, remasking: str = "low_confidence", mask_id: int = 126336,
             eos_id: int = 126081, eot_id: int = 126348, logits_eos_inf: bool = False,
             confidence_eos_eot_inf: bool = False, rng: torch.Generator | None = None,
             on_step: Callable[[int, int, torch.Tensor], None] | None = None,
             trace: Trace | None = None) -> torch.Tensor:
    """Returns the canvas (B, prompt_len + gen_length): the prompt, then the answer.

    ``prompt`` is left-padded (with EOS) where rows differ in length, and ``attention_mask``
    marks its real tokens with 1. ``on_step(done, total, x)`` is called after every step;
    ``trace``, when given, records the trajectory and the compute.
    """
    B, P = prompt.shape
    device = prompt.device
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long, device=device)
    x[:, :P] = prompt
    prompt_index = torch.zeros_like(x, dtype=torch.bool)
    prompt_index[:, :P] = True if attention_mask is None else attention_mask.bool()
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.ones(B, gen_length, dtype=attention_mask.dtype, device=device)], dim=1)

    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks

    for num_block in range(num_blocks):
        block_end = P + (num_block + 1) * block_length
        block_mask_index = x[:, block_end - block_length:block_end] == mask_id
        num_transfer_tokens = get_num_transfer_tokens(block_mask_index, steps)
        for i in range(steps):
            mask_index = x == mask_id
            mask_index[:, :P] = False  # a mask token typed into the prompt is text, not a slot
            logits = forward_logits(model, x, attention_mask, prompt_index, cfg_scale, mask_id)
            if trace is not None:
                trace.computed(0, x.shape[1], times=2 if cfg_scale else 1)
            if logits_eos_inf:
                logits[:, :, eos_id] = -torch.inf

            x0, x0_p = propose(logits, temperature, remasking, rng)
            if confidence_eos_eot_inf:
                x0_p = torch.where((x0 == eos_id) | (x0 == eot_id), LAST_CONFIDENCE, x0_p)
            x0_p[:, block_end:] = -torch.inf

            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -torch.inf)

            transfer_index = most_confident(confidence, num_transfer_tokens[:, i])
            x[transfer_index] = x0[transfer_index]
            if trace is not None:
                trace.committed(num_block * steps + i + 1, transfer_index[:, P:], logits[:, P:], x0[:, P:], P)
            if on_step is not None:
                on_step(num_block * steps + i + 1, num_blocks * steps, x)
    return x


@torch.no_grad()
def infill(model, x: torch.Tensor, *, steps: int, mask_id: int, temperature: float = 0.0,
           remasking: str = "low_confidence", rng: torch.Generator | None = None,
           attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fill the mask tokens of ``x`` (B, T), wherever they stand, in ``steps`` steps: ``generate``'s step
    with one block that is every mask of the row. Returns the filled copy."""
    x = x.clone()
    num_transfer_tokens = get_num_transfer_tokens(x == mask_id, steps)
    for i in range(steps):
        mask_index = x == mask_id
        if attention_mask is not None:
            mask_index &= attention_mask.bool()  # left padding is no slot
        x0, x0_p = propose(model(x, attention_mask=attention_mask), temperature, remasking, rng)
        transfer_index = most_confident(torch.where(mask_index, x0_p, -torch.inf), num_transfer_tokens[:, i])
        x[transfer_index] = x0[transfer_index]
    return x
