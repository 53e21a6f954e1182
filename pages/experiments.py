"""Experiments: build a plan, queue it for the worker, follow and cancel running studies."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st
from sqlalchemy import select

from core import compressors, datasets
from core.errors import UserError
from core.experiments import CONDITIONS, Plan, cancel, published_study
from core.llada.sampler import PRESETS
from core.service import default_model
from core.worker import submit_experiment
from db.models import Experiment, Job
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


with st.form("plan"):
    use_study = st.toggle("Published study preset (250 prompts each of GSM8K, CNN/DailyMail, ShareGPT; "
                          "LLMLingua-2 at ratio 2; four conditions)")
    name = st.text_input("Name", value="my experiment")
    cols = st.columns([3, 1, 1])
    sources = cols[0].multiselect("Prompt sources", list(datasets.SOURCES), default=["gsm8k"],
                                  format_func=lambda k: datasets.SOURCES[k][0])
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
    batch_size = cols[2].number_input("Batch size", min_value=1, value=16)
    submitted = st.form_submit_button("Queue experiment", type="primary")

if submitted:
    try:
        model_ids = [m.strip() for m in models.splitlines() if m.strip()]
        if use_study:
            plan = published_study(model_ids[0] if model_ids else None)
            plan.validate()
        else:
            plan = Plan.from_dict({
                "name": name.strip() or "experiment", "source": sources, "n_prompts": int(n_prompts),
                "sample_seed": int(sample_seed), "compressors": [{"name": c, "params": {}} for c in chosen],
                "ratios": numbers(ratios), "conditions": conditions, "seeds": numbers(seeds, int),
                "models": model_ids, "preset": None if preset == "(model default)" else preset,
                "batch_size": int(batch_size)})
        experiment_id, _job = submit_experiment(db_url(), plan)
        st.success(f"Experiment #{experiment_id} queued.")
    except UserError as exc:
        st.error(str(exc))


@st.fragment(run_every=2.0)
def experiment_list() -> None:
    with session_scope(db_url()) as session:
        experiments = session.scalars(select(Experiment).order_by(Experiment.id.desc()).limit(50)).all()
        messages = {}
        for job in session.scalars(select(Job).where(Job.kind == "experiment").order_by(Job.id)):
            messages[job.params.get("experiment_id")] = job.message
        rows = [{"id": e.id, "name": e.name, "status": e.status, "done": e.done_units, "total": e.total_units,
                 "error": e.error, "message": messages.get(e.id, ""), "plan": e.plan} for e in experiments]
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
            st.code(json.dumps(row["plan"], indent=2), language="json")


experiment_list()
