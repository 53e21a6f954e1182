"""Playground: one prompt, compressed, run on the model, compared side by side."""

from __future__ import annotations

import streamlit as st

from core import render
from core.data import datasets
from core.errors import UserError
from core.generation import demo
from core.generation.ar import PACKAGED_SMOLLM2
from core.llada.loader import available_locally
from core.llada import families
from core.llada.sampler import CACHES, DREAM_ALGS, MODES, PRESETS, REMASKING, SamplerParams
from core.pipeline import compressors, infill, metrics
from core.pipeline.conditions import CONDITIONS
from core.pipeline.service import CompareRequest, default_model, default_preset, default_source, model_family
from core.pipeline.worker import job_state, submit_compare
from pages.shared import CONDITION_TITLES, db_url, get_worker, load_view, model_card, require_reviewer, show_run

state = st.session_state


def prompt_section() -> tuple[str, dict | None]:
    """The prompt, pasted or sampled; a sampled one keeps its source, task and gold answer until edited."""
    with st.expander("Sample a prompt", expanded=not state["prompt"]):
        cols = st.columns([3, 1, 1])
        source = cols[0].selectbox("Source", list(datasets.SOURCES), index=list(datasets.SOURCES).index(
            default_source(default_model())), format_func=lambda k: datasets.SOURCES[k][0])
        sample_seed = cols[1].number_input("Sample seed", min_value=0, value=0, step=1)
        if cols[2].button("Sample", width="stretch"):
            try:
                sample = datasets.sample_one(source, int(sample_seed))
            except UserError as exc:
                st.error(str(exc))
            else:
                # The demo model was trained on bare questions; other models get the task's instruction.
                instruction = "" if demo.is_demo(default_model()) else datasets.TASK_INSTRUCTIONS[sample.task]
                state["prompt"] = datasets.instructed(instruction, sample.prompt)
                state["sample"] = sample.to_dict()

    prompt = st.text_area("Prompt", key="prompt", height=180, placeholder="Paste a prompt, or sample one above.")
    sample = state["sample"] if state["sample"] and prompt.endswith(state["sample"]["prompt"]) else None
    if sample:
        st.caption(render.md_escape(
            f"From {sample['source']} ({sample['source_id']}), task {sample['task']}"
            + (f", gold answer {datasets.Sample(**sample).gold_answer}" if sample["gold_solution"] else "")))
    return prompt, sample


def compressor_section() -> tuple[str, float, int, dict]:
    """Compressor, ratio, seed and the compressor's own options."""
    names = list(compressors.REGISTRY)
    # Offline without its checkpoint LLMLingua-2 cannot run, so a first visit starts on a baseline that can.
    llmlingua2_here = available_locally(compressors.LLMLINGUA2_DEFAULT)
    cols = st.columns(3)
    compressor = cols[0].selectbox("Compressor", names, index=0 if llmlingua2_here else names.index("random"),
                                   format_func=lambda k: compressors.REGISTRY[k].label)
    ratio = cols[1].number_input("Compression ratio (original / compressed tokens)", value=2.0, step=0.1,
                                 format="%.2f")
    seed = cols[2].number_input("Seed", value=0, step=1)

    params: dict = {}
    with st.expander("Compressor options", expanded=compressor == "llmlingua2"):
        if compressor == "llmlingua2":
            if not llmlingua2_here:
                st.caption(f"{compressors.LLMLINGUA2_DEFAULT} is not on this machine: it is downloaded on first use "
                           "when online; offline, give a local checkpoint directory.")
            params["model"] = st.text_input("LLMLingua-2 checkpoint (hub id or directory)",
                                            value=compressors.LLMLINGUA2_DEFAULT)
            params["force_reserve_digit"] = st.checkbox(
                "Keep every word with a digit (force_reserve_digit, as the authors do for math)", value=False)
            forced = st.text_input("Force tokens (comma separated; \\n keeps line breaks)", value="\\n")
            params["force_tokens"] = [t.strip().replace("\\n", "\n") for t in forced.split(",") if t.strip()]
            params["calibrate"] = st.checkbox("Calibrate the rate to hit the ratio in the model's tokens", value=True)
        elif compressor == "random":
            params["seed"] = int(st.number_input("Drop seed", value=0, step=1))
        elif compressor in ("dllm_confidence", "self_information"):
            asks = ("the run's model (a diffusion model)" if compressor == "dllm_confidence"
                    else f"the autoregressive control, {PACKAGED_SMOLLM2}")
            st.caption(f"Asks {asks} how much each word matters, and drops the words it needs least first.")
            if compressor == "dllm_confidence":
                params["copies"] = int(st.number_input("Masked copies (each masks every n-th word)", min_value=1,
                                                       max_value=64, value=8))
            params["force_reserve_digit"] = st.checkbox("Keep every word with a digit", value=True)
        else:
            st.caption("No options.")
    return compressor, ratio, int(seed), params


def model_section() -> tuple[str, object, str, str]:
    """Model, its diffusion family (None for the AR control), sampler preset and BERTScore backbone."""
    cols = st.columns(3)
    model = cols[0].text_input("Model (a diffusion LM, or a causal LM as the autoregressive control)",
                               value=default_model(),
                               help="A LLaDA, LLaDA-1.5, dParallel-LLaDA, iLLaDA or Dream checkpoint directory or hub "
                                    "id; any Hugging Face causal LM (directory, "
                                    f"hub id or .gguf file) runs as the autoregressive control; '{PACKAGED_SMOLLM2}' "
                                    "is the small one installed here.")
    preset_keys = list(PRESETS) + ["custom"]
    preset = cols[1].selectbox("Sampler preset", preset_keys, index=preset_keys.index(default_preset(model.strip())),
                               format_func=lambda k: PRESETS[k][0] if k in PRESETS else "custom")
    backbones = list(metrics.bertscore_backbones())
    backbone = cols[2].selectbox("BERTScore backbone", backbones, index=backbones.index(metrics.default_backbone()))
    family = model_family(model.strip())
    model_card(model.strip(), family)
    return model.strip(), family, preset, backbone


def llada_parameters(base: SamplerParams, disabled: bool, modes: tuple[str, ...]) -> dict:
    c = st.columns(4)
    values = dict(
        cfg_scale=float(c[0].number_input("cfg_scale", value=base.cfg_scale, step=0.5, disabled=disabled)),
        remasking=c[1].selectbox("remasking", REMASKING, index=REMASKING.index(base.remasking), disabled=disabled),
        logits_eos_inf=c[2].checkbox("logits_eos_inf", value=base.logits_eos_inf, disabled=disabled),
        confidence_eos_eot_inf=c[3].checkbox("confidence_eos_eot_inf", value=base.confidence_eos_eot_inf,
                                             disabled=disabled))
    llada_modes = [m for m in MODES if m in modes]
    c = st.columns(6)
    values["mode"] = c[0].selectbox(
        "mode", llada_modes, index=llada_modes.index(base.mode) if base.mode in llada_modes else 0, disabled=disabled,
        help="'fast' gives the reference's tokens at temperature 0 unless an approximation is on")
    if "fast" not in modes:
        c[1].caption("This family decodes with the reference loop only: the fast modes do not apply.")
        return values
    values.update(
        cache=c[1].selectbox("cache (approximate)", CACHES, index=CACHES.index(base.cache), disabled=disabled),
        threshold=float(c[2].number_input("threshold (approximate)", value=base.threshold, min_value=0.0,
                                          max_value=0.999, step=0.05, disabled=disabled,
                                          help="0: off; else commit every position above it")),
        entropy_threshold=float(c[3].number_input(
            "entropy_threshold", value=base.entropy_threshold, min_value=0.0, step=0.05, disabled=disabled,
            help="dParallel's rule: 0 off; else commit every position whose entropy is at most it")),
        window=int(c[4].number_input("window (approximate)", value=base.window, min_value=-1, step=8,
                                     disabled=disabled, help="-1: off; else masks computed past the active block")),
        early_stop=c[5].checkbox("early_stop (approximate)", value=base.early_stop, disabled=disabled))
    return values


def dream_parameters(base: SamplerParams, disabled: bool) -> dict:
    c = st.columns(5)
    return dict(
        alg=c[0].selectbox("alg", DREAM_ALGS, index=DREAM_ALGS.index(base.alg), disabled=disabled,
                           help="which masks a step unmasks: at random (origin) or the most confident by "
                                "probability, margin or entropy"),
        alg_temp=float(c[1].number_input("alg_temp", value=base.alg_temp, min_value=0.0, step=0.1,
                                         disabled=disabled, help="0: the most confident; else drawn by confidence")),
        top_p=float(c[2].number_input("top_p", value=base.top_p, min_value=0.01, max_value=1.0, step=0.05,
                                      disabled=disabled)),
        top_k=int(c[3].number_input("top_k", value=base.top_k, min_value=0, step=1, disabled=disabled,
                                    help="0: off")),
        eps=float(c[4].number_input("eps", value=base.eps, min_value=1e-6, max_value=0.5, step=1e-3, format="%.4f",
                                    disabled=disabled, help="the last timestep")))


def block_parameters(base: SamplerParams, disabled: bool) -> dict:
    c = st.columns(6)
    editing = c[1].checkbox("editing (2.1)", value=base.editing_threshold >= 0, disabled=disabled,
                            help="LLaDA2.1 may replace an answer token of the current block it has committed")
    return dict(
        mode="block",
        threshold=float(c[0].number_input("threshold", value=base.threshold, min_value=0.0, max_value=0.999,
                                          step=0.05, disabled=disabled,
                                          help="commit every mask above it, else the step's count of the best")),
        editing_threshold=float(c[2].number_input("editing_threshold", value=max(base.editing_threshold, 0.0),
                                                  min_value=0.0, max_value=0.999, step=0.05,
                                                  disabled=disabled or not editing)) if editing else -1.0,
        max_post_steps=int(c[3].number_input("max_post_steps", value=base.max_post_steps, min_value=0, step=1,
                                             disabled=disabled or not editing)),
        cache="block" if c[4].checkbox("exact cache", value=base.cache == "block", disabled=disabled,
                                       help="keeps finished blocks' keys and values: the same tokens, less compute")
        else "none",
        early_stop=c[5].checkbox("EOS early stop", value=base.early_stop, disabled=disabled),
        top_p=base.top_p, top_k=base.top_k)


def sampler_section(model: str, family, preset: str) -> dict | None:
    """The sampler's parameters: the preset's, shown read-only, or the user's own under "custom". Dream's own
    sampler shows its own parameters; LLaDA's options that do not apply to it are not offered."""
    base = PRESETS[preset if preset in PRESETS else default_preset(model)][1]
    dream_loop = base.mode == "dream" if preset != "custom" else family is families.DREAM
    block_loop = base.mode == "block" if preset != "custom" else family is families.LLADA2
    sampler = None
    with st.expander("Sampler parameters", expanded=preset == "custom"):
        disabled = preset != "custom"
        c = st.columns(4)
        values = dict(
            gen_length=int(c[0].number_input("gen_length", value=base.gen_length, step=8, disabled=disabled)),
            steps=int(c[1].number_input("steps", value=base.steps, step=8, disabled=disabled)),
            temperature=float(c[3].number_input("temperature", value=base.temperature, step=0.1, disabled=disabled)))
        if dream_loop:
            values.update(dream_parameters(base, disabled), mode="dream", block_length=values["gen_length"])
            c[2].caption("Dream's sampler: one canvas, no blocks")
            st.caption("Block length, guidance, remasking, the EOS options, caches, thresholds, early stop and window "
                       "are LLaDA's sampler's; they do not apply to Dream.")
        else:
            values["block_length"] = int(c[2].number_input("block_length", value=base.block_length, step=8,
                                                           disabled=disabled))
        if block_loop:
            values.update(block_parameters(base, disabled))
            st.caption("LLaDA 2.x's block sampler: steps are per block; its cache is exact. Guidance, remasking and "
                       "LLaDA's approximate fast modes do not apply.")
        elif not dream_loop:
            values.update(llada_parameters(base, disabled, family.modes if family else ("reference", "fast")))
        if preset == "custom":
            sampler = values
    chosen = SamplerParams(**sampler) if sampler else base
    if chosen.approximate:
        st.warning(f"Sampler: {chosen.label()}. Outputs can differ from the reference loop's.")
    return sampler


def conditions_section() -> dict:
    """Reconstructions to run besides the two outputs: by instruction, and by infill (diffusion models)."""
    extra = st.multiselect("Also reconstruct the original prompt", [c for c in CONDITIONS if c not in
                                                                     ("original", "compressed")],
                           format_func=CONDITION_TITLES.get,
                           help="Infill: the compressed prompt with masks where words were dropped, filled by the "
                                "diffusion model itself; a 'reasoning' condition answers the rebuilt prompt.")
    chosen = {"conditions": ["original", "compressed", *extra]}
    if "infilled" in extra:
        cols = st.columns(2)
        chosen["infill_length"] = cols[0].radio(
            "Masks per gap", infill.LENGTH_RULES, horizontal=True,
            format_func={"oracle": "oracle: the dropped words' token count", "fixed": "fixed: k per gap"}.get)
        chosen["infill_k"] = int(cols[1].number_input("k (fixed rule)", min_value=1, max_value=64,
                                                      value=infill.DEFAULT_K,
                                                      disabled=chosen["infill_length"] != "fixed"))
    return chosen


def submit(request: CompareRequest) -> None:
    try:
        state["job_id"] = submit_compare(db_url(), request)
    except UserError as exc:
        st.error(str(exc))


@st.fragment(run_every=1.0)
def job_panel() -> None:
    """The queued comparison's progress, then its side-by-side view."""
    job_id = state.get("job_id")
    if job_id is None:
        return
    job = job_state(db_url(), job_id)
    if job is None:
        return
    if job["status"] in ("queued", "running"):
        st.progress(min(max(job["progress"], 0.0), 1.0), text=job["message"] or job["status"])
    elif job["status"] == "failed":
        st.error(job["error"] or "The run failed.")
    elif job["status"] == "done":
        view = load_view(job["run_id"])
        if view is not None:
            st.success(f"Run #{view['run_id']} saved.")
            show_run(view)


require_reviewer()
st.title("Playground")
st.caption("Compress one prompt, run the model on the original and the compressed prompt, and compare.")
get_worker()
state.setdefault("prompt", "")
state.setdefault("sample", None)

prompt, sample = prompt_section()
compressor, ratio, seed, compressor_params = compressor_section()
model, family, preset, backbone = model_section()
sampler = sampler_section(model, family, preset)
conditions = conditions_section()
if st.button("Run", type="primary"):
    submit(CompareRequest(**conditions,
        prompt=prompt, compressor=compressor, ratio=ratio, compressor_params=compressor_params, model=model,
        preset=preset, sampler=sampler, seed=seed, bertscore_backbone=backbone,
        task=sample["task"] if sample else "custom", source=sample["source"] if sample else "pasted",
        source_id=sample["source_id"] if sample else None,
        gold_solution=sample["gold_solution"] if sample else None, reference=sample["reference"] if sample else None))
job_panel()
