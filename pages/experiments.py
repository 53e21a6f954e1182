"""Experiments: build a plan, queue it for the worker, follow and cancel running studies."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace

import pandas as pd
import streamlit as st
from sqlalchemy import select

from core.data import datasets
from core.errors import UserError
from core.llada.sampler import PRESETS
from core.pipeline import compressors, infill
from core.pipeline.backends import BACKENDS
from core.pipeline.conditions import CONDITIONS, STUDY_CONDITIONS
from core.pipeline.experiments import Plan, cancel, published_study
from core.pipeline.service import default_model, default_source, model_family
from core.pipeline.worker import submit_experiment
from db.models import Experiment
from db.queries import experiment_states
from db.session import session_scope
from pages.shared import db_url, get_worker, model_card, require_reviewer


def numbers(text: str, kind=float) -> list:
    try:
        return [kind(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise UserError(f"Not a list of numbers: {text!r}") from None


def plan_section() -> dict:
    """What the plan asks for: sources, compressors, ratios, seeds, conditions, models and preset."""
    form = {"use_study": st.toggle("Published study preset (250 prompts each of GSM8K, CNN/DailyMail, ShareGPT; "
                                   "LLMLingua-2 at ratio 2; four conditions)"),
            "name": st.text_input("Name", value="my experiment")}
    cols = st.columns([3, 1, 1])
    form["sources"] = cols[0].multiselect("Prompt sources", list(datasets.SOURCES),
                                          default=[default_source(default_model())],
                                          format_func=lambda k: datasets.SOURCES[k].label)
    form["n_prompts"] = cols[1].number_input("Prompts per source", min_value=1, value=20)
    form["sample_seed"] = cols[2].number_input("Sampling seed", min_value=0, value=0)
    cols = st.columns([2, 2, 1])
    form["compressors"] = cols[0].multiselect("Compressors", list(compressors.REGISTRY), default=["random"],
                                              format_func=lambda k: compressors.REGISTRY[k].label)
    form["ratios"] = cols[1].text_input("Ratios", value="1.3, 1.5, 2, 3, 5", help="comma separated, each in (1, 20]")
    form["seeds"] = cols[2].text_input("Seeds", value="0")
    form["conditions"] = st.multiselect("Conditions", list(CONDITIONS), default=list(STUDY_CONDITIONS),
                                        help="'original' is the uncompressed baseline, run once per model and seed; "
                                             "the infilled ones need a diffusion model")
    if "infilled" in form["conditions"]:
        cols = st.columns(2)
        form["infill_length"] = cols[0].radio(
            "Masks per gap of the infill", infill.LENGTH_RULES, horizontal=True,
            format_func={"oracle": "oracle: the dropped words' token count", "fixed": "fixed: k per gap"}.get)
        form["infill_k"] = int(cols[1].number_input("k (fixed rule)", min_value=1, max_value=64,
                                                    value=infill.DEFAULT_K, disabled=form["infill_length"] != "fixed"))
    cols = st.columns([3, 1, 1])
    models = cols[0].text_area("Models, one per line (diffusion LMs of any family, or a causal LM as the control)",
                               value=default_model(),
                               help="each runs on the same prompts, compressed once per compressor and ratio")
    form["models"] = [m.strip() for m in models.splitlines() if m.strip()]
    preset = cols[1].selectbox("Sampler preset", ["(model default)"] + list(PRESETS),
                               format_func=lambda k: PRESETS[k][0] if k in PRESETS else k,
                               help="'(model default)' gives each model its family's published setting, the way "
                                    "to compare families (Dream decodes with its own sampler)")
    form["preset"] = None if preset == "(model default)" else preset
    for model in form["models"]:
        model_card(model, model_family(model))
    form["batch_size"] = cols[2].number_input("Batch size", min_value=1, value=16,
                                              help="halved on its own if the GPU runs out of memory")
    if preset in PRESETS and PRESETS[preset][1].approximate:
        st.warning(f"Sampler: {PRESETS[preset][1].label()}. Outputs can differ from the reference loop's.")
    cols = st.columns([2, 1, 3])
    form["backend"] = cols[0].radio(
        "Run on", BACKENDS, horizontal=True,
        format_func={"local": "this worker", "ray": "Ray actors"}.get,
        help="Ray shards the batches over actors, one per GPU (two CPU actors without GPUs), on this machine or "
             "on the cluster at COMPRESSLENS_RAY_ADDRESS; the results are the same, and a run may resume on the "
             "other backend")
    form["actors"] = int(cols[1].number_input("Actors", min_value=0, value=0, disabled=form["backend"] != "ray",
                                              help="0: one per GPU"))
    if form["backend"] == "ray" and importlib.util.find_spec("ray") is None:
        cols[2].warning("Ray is not installed here: run ./scripts/setup.sh --ray, or run on this worker.")
    return form


def own_prompts_section() -> dict:
    """A DUC2004 folder and an uploaded file, with the columns that hold text, ids, gold and references."""
    # No st.form: the column pickers and the per-task settings follow the file and the sources as they are chosen.
    st.subheader("Your own prompts")
    cols = st.columns(2)
    own = {"duc_path": cols[0].text_input("DUC2004 folder on this machine (optional)",
                                          help=datasets.DUC2004_LAYOUTS).strip(),
           "upload": cols[1].file_uploader("Prompts file (optional)", type=["jsonl", "csv"]),
           "table": None, "upload_error": None}
    if own["upload"] is not None:
        try:
            columns = datasets.table_columns(own["upload"].getvalue(), own["upload"].name)
        except UserError as exc:
            own["upload_error"] = str(exc)
            st.error(own["upload_error"])
        else:
            cols = st.columns(5)
            optional = [None] + columns
            own["table"] = {
                "text_column": cols[0].selectbox("Prompt text column", columns),
                "task": cols[1].selectbox("Task", list(datasets.TASK_INSTRUCTIONS)),
                "id_column": cols[2].selectbox("Id column", optional, format_func=lambda c: c or "(row number)"),
                "gold_column": cols[3].selectbox("Gold answer column", optional, format_func=lambda c: c or "(none)"),
                "reference_column": cols[4].selectbox("Reference column", optional,
                                                      format_func=lambda c: c or "(none)")}
    return own


def per_task_section(form: dict, own: dict) -> tuple[dict, dict]:
    """Generation length and instruction for each task among the chosen prompts, from the model's preset."""
    first_model = form["models"][0] if form["models"] else default_model()
    defaults = Plan(preset=form["preset"])
    tasks = sorted({t for s in form["sources"] for t in datasets.SOURCES[s].tasks}
                   | ({"summarization"} if own["duc_path"] else set())
                   | ({own["table"]["task"]} if own["table"] else set()))
    gen_length, instructions = {}, {}
    if tasks:
        st.subheader("Per task")
    for task in tasks:
        base = defaults.sampler_params(first_model, task)
        instruction = defaults.instruction(first_model, task)
        cols = st.columns([1, 4])
        # Keys carry the defaults, so a new preset or model resets these to its own values.
        gen_length[task] = int(cols[0].number_input(
            f"Generation length: {task}", min_value=base.block_length, step=base.block_length, value=base.gen_length,
            key=f"gen-{task}-{base.gen_length}-{base.block_length}"))
        instructions[task] = cols[1].text_area(f"Instruction: {task}", value=instruction, height=68,
                                               placeholder="none: the prompt is sent as it is",
                                               key=f"instruction-{task}-{instruction}")
    return gen_length, instructions


def build_plan(form: dict, own: dict, gen_length: dict, instructions: dict) -> Plan:
    if form["use_study"]:
        plan = replace(published_study(form["models"][0] if form["models"] else None), backend=form["backend"],
                       actors=form["actors"])
        plan.validate()
        return plan
    if own["upload_error"]:
        raise UserError(own["upload_error"])
    sources = form["sources"] + ([{"kind": "duc2004", "path": own["duc_path"]}] if own["duc_path"] else [])
    if own["table"]:
        upload = own["upload"]
        sources.append(datasets.inline_source(upload.name, datasets.from_table(upload.getvalue(), upload.name,
                                                                               **own["table"])))
    return Plan.from_dict({
        "name": form["name"].strip() or "experiment", "source": sources, "n_prompts": int(form["n_prompts"]),
        "sample_seed": int(form["sample_seed"]),
        "compressors": [{"name": c, "params": {}} for c in form["compressors"]],
        "ratios": numbers(form["ratios"]), "conditions": form["conditions"], "seeds": numbers(form["seeds"], int),
        "models": form["models"], "preset": form["preset"], "gen_length": gen_length,
        "instructions": instructions, "batch_size": int(form["batch_size"]),
        "infill_length": form.get("infill_length", "oracle"), "infill_k": form.get("infill_k", infill.DEFAULT_K),
        "backend": form["backend"], "actors": form["actors"]})


@st.fragment(run_every=2.0)
def experiment_list() -> None:
    """Every experiment with its job's status; progress and cancel for live ones, the error of failed ones."""
    with session_scope(db_url()) as session:
        experiments = session.scalars(select(Experiment).order_by(Experiment.id.desc()).limit(50)).all()
        states = experiment_states(session, [e.id for e in experiments])
        rows = [{"id": e.id, "name": e.name, "plan": e.plan, **states[e.id]} for e in experiments]
    if not rows:
        st.info("No experiments yet.")
        return
    st.subheader("Experiments")
    st.dataframe(pd.DataFrame([{k: r[k] for k in ("id", "name", "status", "done", "total")} for r in rows])
                 .set_index("id"), width="stretch")
    for row in rows:
        if row["status"] in ("queued", "running"):
            st.progress(row["done"] / max(row["total"], 1),
                        text=f"#{row['id']} {row['name']}: {row['message'] or row['status']}")
            if st.button(f"Cancel #{row['id']}", key=f"cancel-{row['id']}"):
                cancel(db_url(), row["id"])
                st.rerun()
        elif row["status"] == "failed":
            st.error(f"#{row['id']} {row['name']} failed: {row['error']}")
    with st.expander("Plans as JSON (for python -m core experiment --plan)"):
        for row in rows:
            text = json.dumps(row["plan"], indent=2)
            if len(text) <= 20_000:
                st.code(text, language="json")
            else:  # an uploaded file's prompts travel inside the plan
                st.download_button(f"Plan of #{row['id']} (JSON, {len(text) // 1000} kB)", text.encode(),
                                   file_name=f"plan-{row['id']}.json", mime="application/json",
                                   key=f"plan-{row['id']}")


require_reviewer()
st.title("Experiments")
st.caption("Prompts x compressors x ratios x conditions x seeds x models, run by the worker: a reload or a "
           "closed tab does not stop it, and a stopped run resumes where it was.")
get_worker()
form = plan_section()
own = own_prompts_section()
gen_length, instructions = per_task_section(form, own)
if st.button("Queue experiment", type="primary"):
    try:
        experiment_id, _job = submit_experiment(db_url(), build_plan(form, own, gen_length, instructions))
        st.success(f"Experiment #{experiment_id} queued.")
    except UserError as exc:
        st.error(str(exc))
experiment_list()
