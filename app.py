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
from pages.shared import auth_on, db_url, get_worker, sign_in_from_link, sign_out, signed_in

st.set_page_config(page_title="CompressLens", page_icon=":material/compress:", layout="wide")


def server_status(stored: int, worker) -> None:
    """The device, default model, database and worker, for whoever runs experiments."""
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


try:  # a wrong database URL or worker setting is said here, before any page or the worker touches it
    with session_scope(db_url()) as session:
        stored = run_count(session)
    worker = get_worker()
    auth = auth_on()
except UserError as exc:
    st.error(render.md_escape(exc))
    st.stop()
invite_refused = sign_in_from_link() if auth else None
who = signed_in() if auth else None
with st.sidebar:
    st.markdown("### CompressLens")
    if who is not None:
        st.caption(f"Signed in as **{render.md_escape(who.name)}** ({who.role})")
        st.button("Sign out", on_click=sign_out)
    if not auth or (who is not None and who.is_reviewer):
        server_status(stored, worker)
if invite_refused:
    st.error(render.md_escape(invite_refused))

REVIEW = st.Page("pages/review.py", title="Review", icon=":material/rate_review:")
PAGES = [
    st.Page("pages/playground.py", title="Playground", icon=":material/science:", default=True),
    st.Page("pages/experiments.py", title="Experiments", icon=":material/lab_profile:"),
    st.Page("pages/results.py", title="Results", icon=":material/monitoring:"),
    st.Page("pages/history.py", title="History", icon=":material/history:"),
    REVIEW,
]
if auth and who is None:
    # Every page's address shows the sign-in form, so a bookmarked page opens once its owner has signed in.
    pages = [st.Page("pages/sign_in.py", title="Sign in", icon=":material/login:", default=True)]
    pages += [st.Page("pages/sign_in.py", title="Sign in", url_path=p.url_path) for p in PAGES[1:]]
    st.navigation(pages, position="hidden").run()
else:
    st.navigation([REVIEW] if auth and not who.is_reviewer else PAGES).run()  # annotators see only their queue
