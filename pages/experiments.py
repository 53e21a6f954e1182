"""Experiments: build a plan, queue it for the worker, follow and cancel running studies."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st
from sqlalchemy import select

from core.data import datasets
from core.errors import UserError
from core.llada.sampler import PRESETS
from core.pipeline import compressors
from core.pipeline.experiments import CONDITIONS, Plan, cancel, published_study
from core.pipeline.service import default_model, default_source
from core.pipeline.worker import submit_experiment
from db.models import Experiment
from db.queries import experiment_states
from db.session import session_scope
from pages.shared import db_url, get_worker

st.title("Experiments")
st.caption("Prompts x compressors x ratios x conditions x seeds x models, run by the worker: a reload or a "
           "closed tab does not stop it, and a stopped run resumes where it was.")
get_worker()


def numbers(text: str, kind=float) -> list:
    try:
        return [kind(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise UserError(f"Not a list of numbers: {text!r}") from None


use_study = st.toggle("Published study preset (250 prompts each of GSM8K, CNN/DailyMail, ShareGPT; "
                      "LLMLingua-2 at ratio 2; four conditions)")
name = st.text_input("Name", value="my experiment")
cols = st.columns([3, 1, 1])
sources = cols[0].multiselect("Prompt sources", list(datasets.SOURCES), default=[default_source(default_model())],
                              format_func=lambda k: datasets.SOURCES[k].label)
n_prompts = cols[1].number_input("Prompts per source", min_value=1, value=20)
sample_seed = cols[2].number_input("Sampling seed", min_value=0, value=0)
cols = st.columns([2, 2, 1])
chosen = cols[0].multiselect("Compressors", list(compressors.REGISTRY), default=["random"],
                             format_func=lambda k: compressors.REGISTRY[k].label)
ratios = cols[1].text_input("Ratios", value="1.3, 1.5, 2, 3, 5", help="comma separated, each in (1, 20]")
seeds = cols[2].text_input("Seeds", value="0")
conditions = st.multiselect("Conditions", list(CONDITIONS), default=list(CONDITIONS),
                            help="'original' is the uncompressed baseline, run once per model and seed")
cols = st.columns([3, 1, 1])
models = cols[0].text_area("Models, one per line (LLaDA or a causal LM as the control)", value=default_model())
preset = cols[1].selectbox("Sampler preset", ["(model default)"] + list(PRESETS),
                           format_func=lambda k: PRESETS[k][0] if k in PRESETS else k)
batch_size = cols[2].number_input("Batch size", min_value=1, value=16,
                                  help="halved on its own if the GPU runs out of memory")
if preset in PRESETS and PRESETS[preset][1].approximate:
    st.warning(f"Sampler: {PRESETS[preset][1].label()}. Outputs can differ from the reference loop's.")

# No st.form: the column pickers and the per-task settings follow the file and the sources as they are chosen.
st.subheader("Your own prompts")
cols = st.columns(2)
duc_path = cols[0].text_input("DUC2004 folder on this machine (optional)", help=datasets.DUC2004_LAYOUTS).strip()
upload = cols[1].file_uploader("Prompts file (optional)", type=["jsonl", "csv"])
table, upload_error = None, None
if upload is not None:
    try:
        columns = datasets.table_columns(upload.getvalue(), upload.name)
    except UserError as exc:
        upload_error = str(exc)
        st.error(upload_error)
    else:
        cols = st.columns(5)
        optional = [None] + columns
        table = {"text_column": cols[0].selectbox("Prompt text column", columns),
                 "task": cols[1].selectbox("Task", list(datasets.TASK_INSTRUCTIONS)),
                 "id_column": cols[2].selectbox("Id column", optional, format_func=lambda c: c or "(row number)"),
                 "gold_column": cols[3].selectbox("Gold answer column", optional, format_func=lambda c: c or "(none)"),
                 "reference_column": cols[4].selectbox("Reference column", optional,
                                                       format_func=lambda c: c or "(none)")}

model_ids = [m.strip() for m in models.splitlines() if m.strip()]
first_model = model_ids[0] if model_ids else default_model()
preset_name = None if preset == "(model default)" else preset
defaults = Plan(preset=preset_name)
tasks = sorted({t for s in sources for t in datasets.SOURCES[s].tasks} | ({"summarization"} if duc_path else set())
               | ({table["task"]} if table else set()))
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

if st.button("Queue experiment", type="primary"):
    try:
        if use_study:
            plan = published_study(model_ids[0] if model_ids else None)
            plan.validate()
        elif upload_error:
            raise UserError(upload_error)
        else:
            own = [{"kind": "duc2004", "path": duc_path}] if duc_path else []
            if table:
                own.append(datasets.inline_source(upload.name, datasets.from_table(upload.getvalue(), upload.name,
                                                                                   **table)))
            plan = Plan.from_dict({
                "name": name.strip() or "experiment", "source": sources + own, "n_prompts": int(n_prompts),
                "sample_seed": int(sample_seed), "compressors": [{"name": c, "params": {}} for c in chosen],
                "ratios": numbers(ratios), "conditions": conditions, "seeds": numbers(seeds, int),
                "models": model_ids, "preset": preset_name, "gen_length": gen_length,
                "instructions": instructions, "batch_size": int(batch_size)})
        experiment_id, _job = submit_experiment(db_url(), plan)
        st.success(f"Experiment #{experiment_id} queued.")
    except UserError as exc:
        st.error(str(exc))


@st.fragment(run_every=2.0)
def experiment_list() -> None:
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


experiment_list()
