"""CompressLens: what prompt compression does to a diffusion language model.

    streamlit run app.py
"""

from __future__ import annotations

import streamlit as st
import torch

from core import render
from core.errors import UserError
from core.generation import demo, smol_diffusion
from core.pipeline.service import default_model
from core.pipeline.worker import in_process_worker
from db.queries import run_count
from db.session import schema_version, session_scope, shown
from pages.shared import db_url, get_worker

st.set_page_config(page_title="CompressLens", page_icon=":material/compress:", layout="wide")

try:  # a wrong database URL or worker setting is said here, before any page or the worker touches it
    with session_scope(db_url()) as session:
        stored = run_count(session)
    worker = get_worker()
except UserError as exc:
    st.error(render.md_escape(exc))
    st.stop()
with st.sidebar:
    st.markdown("### CompressLens")
    device = f"GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU only (no GPU found)"
    st.caption(f"Device: {device}")
    model_id = default_model()
    if demo.is_demo(model_id):
        params = demo.parameter_count()
        st.caption(f"Default model: {render.md_escape(model_id)}, the demo model ({params / 1e6:.1f}M parameters, "
                   f"1 of {round(demo.FULL_SIZE_PARAMETERS / params):,} of LLaDA-8B's)")
    elif smol_diffusion.is_smol(model_id):
        st.caption(f"Default model: {render.md_escape(model_id)}, SmolLM2-135M-Instruct made a diffusion model by "
                   "CompressLens (134.5M parameters, far below LLaDA-8B; no LLaDA-8B and GPU here)")
    else:
        st.caption(f"Default model: {render.md_escape(model_id)}")
    st.caption(f"Database: {render.md_escape(shown(db_url()))} (schema v{schema_version(db_url())}, {stored} runs)")
    if in_process_worker():
        st.caption("Worker: " + ("running" + (f", job #{worker.current_job}" if worker.current_job else ", idle")
                                 if worker.alive else "stopped"))
    else:
        st.caption("Worker: none in this server (COMPRESSLENS_WORKER=off); `python -m core worker` runs the jobs")

page = st.navigation([
    st.Page("pages/playground.py", title="Playground", icon=":material/science:", default=True),
    st.Page("pages/experiments.py", title="Experiments", icon=":material/lab_profile:"),
    st.Page("pages/results.py", title="Results", icon=":material/monitoring:"),
    st.Page("pages/history.py", title="History", icon=":material/history:"),
    st.Page("pages/review.py", title="Review", icon=":material/rate_review:"),
])
page.run()
